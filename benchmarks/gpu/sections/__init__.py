"""The sections of ``benchmarks.gpu.run_gpu``, one module each: ``losses``, ``minkunet``,
``pretrain`` (the two pretraining sections) and ``models`` (``models_gpu``'s benchmarks).
"""
