// Shared by every kernel file; it comes first in the NVRTC program and in the host emulation.
//
// The kernels are written in a restricted style so that the same source runs on a GPU (NVRTC)
// and on the CPU (the host C++ compiler with `host_shim.h`, which runs the blocks and threads of
// a launch one after another):
//   - grid-stride loops over the outputs (`NF_FOR`), so any grid size is correct;
//   - every output element is written by exactly one thread, and no thread reads an element
//     that another thread of the same launch writes (no ordering between threads is assumed);
//   - no shared memory, no __syncthreads, no atomics, no warp intrinsics;
//   - reductions are two launches: per-thread partial sums in double, then one thread per
//     output sums the partials in a fixed order (deterministic on the device too);
//   - parameters are `float*`, `const float*`, `int`, `long long` or `float` only (the host
//     code launches them through one generic argument list).
// Kernel entry points are `extern "C" __global__ void nf_...(...)` with the parameter list on
// the same line; helpers are `static __device__ __forceinline__`.
//
// Index arithmetic is 32-bit: the engine refuses any launch of 2^31 threads or more, and every
// tensor a kernel indexes has fewer than 2^31 elements (the engine checks the sizes it passes as
// `int`), so unsigned 32-bit divisions and remainders (far cheaper on a GPU than 64-bit ones)
// cannot overflow.

// `i` (unsigned) runs over 0..total, split over the whole grid. `total` < 2^31, so `i + stride`
// (stride <= 2^31) cannot wrap.
#define NF_FOR(i, total)                                                                       \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)(total);          \
         i += blockDim.x * gridDim.x)
