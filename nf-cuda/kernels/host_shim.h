// Host shim: lets the host C++ compiler build the CUDA kernels of this folder unchanged, so that
// tests can run them on the CPU (nf-cuda's `emu` module compiles prelude.cuh and the .cu files
// after this header, and launches a kernel by running its blocks and threads one after another,
// optionally in reverse order).
//
// The kernels use no shared memory, no __syncthreads, no warp intrinsics and no atomics (see
// prelude.cuh); atomicAdd is defined anyway, as a plain read-modify-write, which is exact when
// threads run one at a time.
#include <math.h>
#include <stdint.h>
#include <string.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct nf_dim3 {
    unsigned int x, y, z;
};

// The launch coordinates of the emulated thread that is running (per OS thread, so that tests
// running in parallel do not interfere).
extern thread_local nf_dim3 blockIdx, blockDim, threadIdx, gridDim;

static inline float atomicAdd(float* address, float v) {
    float old = *address;
    *address = old + v;
    return old;
}
static inline double atomicAdd(double* address, double v) {
    double old = *address;
    *address = old + v;
    return old;
}
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// CUDA's bit casts between float and unsigned int.
static inline unsigned int __float_as_uint(float x) {
    unsigned int u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned int u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
