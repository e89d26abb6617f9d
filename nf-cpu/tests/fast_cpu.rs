//! The fast CPU backend through the conformance suite (`nf-conformance`): the op tests with 1,
//! 2 and 3 worker threads under every instruction set this CPU runs
//! (`nf_cpu::available_isas`), the training steps and the arena test with 1, 2 and 3 workers on
//! the active one; then what only this backend has (a workspace for fewer workers than the pool,
//! the block transpose).
//!
//! Tolerances (relative to each buffer's largest |reference| value): convolution and linear
//! 1e-4 (the same products summed in another order and with fused multiply-adds; see the
//! suite's documentation); batch norm 1e-5 (statistics summed in `f64` in another order, then
//! normalised in `f32` where the reference stays in `f64`: a few units in the last place);
//! ReLU, pooling, SGD and the loss run the reference arithmetic and must match bit for bit.
//! After two SGD steps 2e-3 (steps amplify rounding differences through BN: at n = 3, ResNet-18's
//! first block output reaches 1.1e-3 of its scale; a wrong gradient moves weights by ~lr·|g|).
use nf_conformance::{conformance_suite, geom, Call, Case, Side, Subject, Tol};
use nf_core::region::Region;
use nf_cpu::workspace::{floats_for, KernelCall};
use nf_cpu::{available_isas, isa, FastCpuBackend, Isa, Pool};

/// The fast CPU backend with a pool of `threads` workers on `isa`.
struct Cpu {
    pool: Pool,
}

impl Subject for Cpu {
    type B<'a> = FastCpuBackend<'a>;
    fn name(&self) -> String {
        format!("fast CPU T={} {}", self.pool.threads(), self.pool.isa())
    }
    fn tol(&self) -> Tol {
        Tol {
            gemm: 1e-4,
            bn: 1e-5,
            exact: 0.0,
            steps: 2e-3,
        }
    }
    fn workers(&self) -> usize {
        self.pool.threads()
    }
    fn workspace(&self, k: &KernelCall) -> usize {
        floats_for(k, self.pool.threads(), self.pool.isa())
    }
    fn backend<'a>(&'a self, arena: &'a mut [f32]) -> FastCpuBackend<'a> {
        FastCpuBackend::new(arena, &self.pool)
    }
}

const THREADS: [usize; 3] = [1, 2, 3];

/// Every thread count under every instruction set this CPU runs (one of `Avx512Bf16` and
/// `Avx512`, whose f32 kernels are the same code: `Isa::f32_kernels`; `Amx` runs them too, but
/// takes other convolution paths, so it stays).
fn every_isa() -> Vec<Cpu> {
    let mut isas = available_isas();
    isas.dedup_by_key(|&mut i| if i == Isa::Amx { i } else { i.f32_kernels() });
    THREADS
        .into_iter()
        .flat_map(|t| {
            isas.iter().map(move |&i| Cpu {
                pool: Pool::with_isa(t, i),
            })
        })
        .collect()
}

/// Every thread count on the instruction set `nf` uses.
fn active_isa() -> Vec<Cpu> {
    THREADS
        .into_iter()
        .map(|t| Cpu {
            pool: Pool::with_isa(t, isa::active()),
        })
        .collect()
}

conformance_suite!(ops = every_isa(), steps = active_isa());

/// A plan made for fewer workers than the pool has: the convolution uses fewer workers.
#[test]
fn conv_with_a_workspace_for_fewer_workers() {
    let g = geom(6, 8, 7, 7, 16, 3, 1, 1);
    let isa = available_isas()[0];
    let s = Cpu {
        pool: Pool::with_isa(3, isa),
    };
    let mut c = Case::new(9);
    let x = c.input("x", g.in_len());
    let w = c.input("w", g.weight_len());
    let y = c.gemm_out("y", g.out_len());
    let dy = c.input("dy", g.out_len());
    let dw = c.gemm_out("dw", g.weight_len());
    let dx = c.gemm_out("dx", g.in_len());
    let one = |k| floats_for(&k, 1, isa);
    let bwd = KernelCall::ConvBackward {
        g,
        dx: true,
        db: false,
    };
    let hws = c.workspace(one(KernelCall::ConvForward(g)).max(one(bwd)));
    let rws = c.workspace(g.cols_len());
    let mut arena = vec![0f32; c.len()];
    let mut be = s.backend(&mut arena);
    let none = Region::NONE;
    c.check("conv, one worker's workspace", &mut be, &s.tol(), |side| {
        let ws = if side == Side::Subject { hws } else { rws };
        vec![
            Call::ConvForward(g, [x, w, none, y, ws]),
            Call::ConvBackward(g, [x, w, dy, dw, none, dx, ws]),
        ]
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The block transpose used by GEMM packing and the convolution's input gradient (the AVX
/// 8×8 register transpose where the CPU has it) against a plain loop, on sizes that cover whole
/// blocks, ragged edges and padded strides.
#[test]
fn transpose_matches_plain_loop() {
    for isa in available_isas() {
        transpose_case(isa);
    }
}

fn transpose_case(isa: Isa) {
    use nf_cpu::gemm;
    for lines in [1, 7, 8, 9, 16, 23] {
        for kc in [1, 5, 8, 13, 24] {
            let (stride, d) = (kc + 3, lines + 2);
            let src: Vec<f32> = (0..lines * stride).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; kc * d];
            gemm::transpose(isa, &src, stride, lines, kc, &mut dst, d);
            for k in 0..kc {
                for l in 0..d {
                    let want = if l < lines { src[l * stride + k] } else { -1.0 };
                    assert_eq!(
                        dst[k * d + l],
                        want,
                        "{isa}: lines {lines} kc {kc}: ({k}, {l})"
                    );
                }
            }
        }
    }
}
