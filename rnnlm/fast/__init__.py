"""The fast engine: the same model as rnnlm/textbook.py, arranged for the machine. The
rest of rnnlm reaches it through rnnlm/engines.py only.

    engine.py          the BPTT: unrolling a window, its GEMMs, softmax cross-entropy
    cells.py           one step of each cell: its buffers and its recurrent product
    kernels.py         the elementwise work of a step, behind one interface
    kernels_numpy.py   ... in NumPy
    kernels_numba.py   ... compiled by Numba, where it is installed (rnnlm[fast])
    buffers.py         memory and layout: kept arrays, columns copies (no math)
"""
