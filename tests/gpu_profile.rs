//! The CUDA backend's launch profile on VGG-11 under 256 MiB, planned as `nf train --device
//! cuda` plans it, on the counting device (`nf_cuda::ProfileDevice`: the backend's logic runs,
//! no kernel does): what `cargo bench --bench gpu_profile` prints, held to the targets the
//! engine meets (issue #14), so that a change that brings back a host synchronisation per step
//! or per-sample GEMMs fails here, on any machine.
use nf_core::model::Op;
use nf_core::plan::{Mode, PlanOptions};
use nf_core::zoo::VGG11;
use nf_cuda::kernels::Kernel;
use nf_cuda::profile::{step_profile, step_profile_in};
use nf_cuda::{reserved_bytes, ChunkPolicy, CudaOptions, GemmPrecision};
use nf_host::run_plan::cuda_plan;

#[test]
fn vgg11_steps_never_wait_and_keep_their_gemms_large() {
    let o = PlanOptions {
        reserve: reserved_bytes(&CudaOptions::default()),
        ..PlanOptions::DEFAULT
    };
    let policy = ChunkPolicy::DEFAULT;
    for mode in [Mode::NeuroFlux, Mode::Bp] {
        let p = cuda_plan(&VGG11, VGG11.input, 10, 256 << 20, mode, &o, policy).unwrap();
        for i in 0..p.blocks().len() {
            let l = p.layout(i);
            let full = step_profile(&l, l.batch);
            let half = step_profile(&l, l.batch / 2);
            let convs: u64 = (0..l.n_segments())
                .map(|k| {
                    let s = l.segment(k);
                    s.ops[..s.n_ops]
                        .iter()
                        .filter(|o| matches!(o.op, Op::Conv { .. }))
                        .count() as u64
                })
                .sum();
            let share = full.gemm_flops_with_min_dim(64) as f64 / full.gemm_flops() as f64;
            eprintln!(
                "{} block {i} (batch {}): {} launches ({} at half batch), {} GEMMs, {:.1}% of GEMM FLOPs with every dimension >= 64, {} waits",
                mode.name(),
                l.batch,
                full.total_launches(),
                half.total_launches(),
                full.gemms.len(),
                100.0 * share,
                full.waits
            );
            // No host synchronisation, no allocation, only the batch's two uploads.
            assert_eq!((full.waits, full.downloads, full.allocations), (0, 0, 0));
            assert_eq!((full.uploads, full.polls), (2, 1));
            // At most `parts` chunks per convolution, forward and backward: one im2col each.
            let im2col = full.launches_of(Kernel::Im2col);
            assert!(
                im2col <= 2 * convs * policy.parts as u64,
                "block {i}: {im2col} im2col launches for {convs} convolutions"
            );
            assert!(half.total_launches() <= full.total_launches());
            // BP and the blocks of units 4-7 put 90% of their FLOPs in GEMMs whose every
            // dimension is at least 64; blocks 0 and 1 do not (55.6% and 81.5%): their heads'
            // convolutions have 32 to 56 filters, and the first layer is 27 deep.
            if mode == Mode::Bp || l.first >= 4 {
                assert!(share >= 0.9, "block {i}: {share}");
            }
        }
    }
}

/// The same in bf16 (`--precision bf16`): every GEMM of a step has bf16 operands, rounded by
/// `nf_round_bf16` into the planned scratch (at most one rounding per operand of a GEMM: the
/// weights once per call), and a step still never waits for the host.
#[test]
fn vgg11_bf16_steps_round_each_operand_once_and_never_wait() {
    let o = PlanOptions {
        reserve: reserved_bytes(&CudaOptions::default()),
        ..PlanOptions::DEFAULT
    };
    let policy = ChunkPolicy::DEFAULT.with_precision(GemmPrecision::Bf16);
    for mode in [Mode::NeuroFlux, Mode::Bp] {
        let p = cuda_plan(&VGG11, VGG11.input, 10, 256 << 20, mode, &o, policy).unwrap();
        for i in 0..p.blocks().len() {
            let l = p.layout(i);
            let full = step_profile_in(&l, l.batch, GemmPrecision::Bf16);
            let rounds = full.launches_of(Kernel::RoundBf16);
            let gemms = full.gemms.len() as u64;
            eprintln!(
                "{} bf16 block {i} (batch {}): {} launches of which {rounds} bf16 roundings, {gemms} GEMMs",
                mode.name(),
                l.batch,
                full.total_launches(),
            );
            assert_eq!((full.waits, full.downloads, full.allocations), (0, 0, 0));
            assert_eq!(full.bf16_gemms, gemms);
            assert!(
                rounds > 0 && rounds <= 2 * gemms,
                "block {i}: {rounds} for {gemms}"
            );
        }
    }
}
