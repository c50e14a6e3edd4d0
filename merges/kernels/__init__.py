"""Execution backends: faster ways to compute a method's results, bit for bit the same.

A kernel is not a method: it has no recipe name and no spec, and the engine
(`Merge._uses_cpu_kernel`) decides when to use it instead of the method's torch function.
`ties_cpu` computes `ties` on the CPU as a fused C kernel.
"""
