"""Fused GPU kernels: the hottest row kernels of layers.py and optim.py as CUDA loop bodies.

This module does not import CuPy: `minigpt.backend` (the only module that does)
hands it the cupy module, and `parallel_rows` calls the results on CuPy arrays.
"""
# On a GPU every line of a row kernel (`u = x * x`, `u += GELU_SCALE`, ...) is
# a kernel launch that reads and writes whole arrays in GPU memory: GELU
# backward is a dozen passes over memory where one would do. For the hottest
# kernels the same formulas are written once more below, as the loop body of a
# CuPy ElementwiseKernel: one launch, each element read once and written once.
# `parallel_rows` calls these instead of the NumPy-style kernel on CuPy arrays.
#
# How to read a body: CuPy writes the loop over elements; the body sees one
# element of each array by its name. Inputs are read-only, outputs are written
# in place. `T` is the arrays' dtype (float for float32), so the arithmetic is
# float32 like NumPy's. Python-float constants come in as float64, and the body
# rounds them to T where NumPy does (`(T)(1.0 - b1) * g` is `(1.0 - b1) * g`).
# Each body does its NumPy kernel's operations in the same order (the CPU tests
# check this bit for bit) and is compiled without fused multiply-adds, so every
# product and sum rounds as on the CPU; only tanh is the GPU's own.

GPU_PREAMBLE = """
#define GELU_SCALE 0.7978845608028654   // sqrt(2 / pi), layers.GELU_SCALE
#define GELU_CUBIC 0.044715             // layers.GELU_CUBIC
"""

# row kernel -> (its parameters, CUDA inputs, CUDA outputs, loop body)
GPU_KERNELS = {
    "_gelu": ("x, out", "T x", "T out", """
        T u = (x * x * (T)(GELU_SCALE * GELU_CUBIC) + (T)GELU_SCALE) * x;   // u = s (x + 0.044715 x^3)
        out = (tanh(u) + (T)1) * x * (T)0.5;                                // 0.5 x (1 + tanh(u))
    """),
    "_gelu_backward": ("dout, x, dx", "T dout, T x", "T dx", """
        T x2 = x * x;
        T t = tanh((x2 * (T)(GELU_SCALE * GELU_CUBIC) + (T)GELU_SCALE) * x);  // t = tanh(u), as forward
        T du = x2 * (T)(3.0 * GELU_SCALE * GELU_CUBIC) + (T)GELU_SCALE;       // du/dx = s (1 + 3 * 0.044715 x^2)
        dx = (((T)1 - t * t) * x * du + (t + (T)1)) * dout * (T)0.5;  // 0.5 dout ((1 + t) + x (1 - t^2) du)
    """),
    "_adamw_update": ("p, g, m, v, b1, b2, step_size, v_scale, eps, decay",
                      "T g, float64 b1, float64 b2, float64 step_size, float64 v_scale, "
                      "float64 eps, float64 decay", "T p, T m, T v", """
        m = m * (T)b1 + (T)(1.0 - b1) * g;            // m = b1 m + (1 - b1) g
        v = v * (T)b2 + g * g * (T)(1.0 - b2);        // v = b2 v + (1 - b2) g^2
        p *= (T)(1.0 - decay);                        // decoupled decay: p -= lr wd p (decay 0: p * 1)
        p -= m / (sqrt(v) * (T)v_scale + (T)eps) * (T)step_size;   // p -= lr m_hat / (sqrt(v_hat) + eps)
    """),
}


def build(cupy):
    """{row kernel's name: a function called like that kernel that runs its ElementwiseKernel}.

    CuPy compiles each kernel (once per dtype, cached on disk) the first time it runs.
    """
    return {name: _fused_kernel(cupy, name, *spec) for name, spec in GPU_KERNELS.items()}


def _fused_kernel(cupy, name, params, inputs, outputs, body):
    """A function called like the row kernel `name` that runs its ElementwiseKernel."""
    kernel = cupy.ElementwiseKernel(inputs, outputs, body, "minigpt" + name, preamble=GPU_PREAMBLE,
                                    options=("--fmad=false",), no_return=True)
    params = [n.strip() for n in params.split(",")]
    order = [decl.split()[-1] for decl in (inputs + "," + outputs).split(",")]  # CuPy's order: inputs, outputs

    def run(*arrays, **constants):
        args = dict(zip(params, arrays), **constants)
        kernel(*(args[n] for n in order))
    run.__name__ = run.__qualname__ = name
    return run
