//! The CUDA plans give cuBLAS aligned operands (issue 31): planned as `nf train --device cuda`
//! plans them ([`cuda_plan`]), every region starts on [`GEMM_ALIGN`] bytes, and every GEMM a
//! training step, an evaluation pass, the units-only pass and a recompute chain ask of the
//! backend (recorded on the counting device, which runs the backend's real logic) has its
//! three operands on 128-byte boundaries; the padding is part of the planned bytes.
use nf_core::backend::Backend;
use nf_core::layout::{ELEM_BYTES, GEMM_ALIGN};
use nf_core::model::ModelSpec;
use nf_core::optim::Sgd;
use nf_core::plan::{plan, Mode, PlanOptions};
use nf_core::step;
use nf_core::zoo;
use nf_cuda::{reserved_bytes, ChunkPolicy, CudaOptions, GemmPrecision, ProfileBackend};
use nf_host::run_plan::cuda_plan;

/// Run every kind of pass of block `i` of `p` on the counting device (its recompute chain, two
/// training steps, an evaluation pass, the units-only pass); the GEMM operands it was asked
/// for.
fn operands(p: &nf_core::plan::Plan, i: usize, precision: GemmPrecision) -> Vec<[usize; 3]> {
    let l = p.layout(i);
    let end = (p.blocks[i].bytes / ELEM_BYTES) as usize;
    let mut be = ProfileBackend::profiling(end);
    be.set_region_align(p.options.region_align);
    be.set_gemm_precision(precision);
    if let Some(c) = p.chain(i) {
        step::infer(&mut be, &c, c.batch).unwrap();
    }
    let per = l.model.unit_input(l.input_shape, l.first).len();
    be.write(l.input.prefix(l.batch * per), &vec![0.0; l.batch * per]);
    be.write(l.labels, &vec![0.0; l.batch]);
    for n in [l.batch, l.batch.div_ceil(2)] {
        step::train_step(&mut be, &l, n, &Sgd::default(), 0.01, &mut []).unwrap();
    }
    step::eval_step(&mut be, &l, l.batch, &mut []).unwrap();
    step::infer_step(&mut be, &l, l.batch).unwrap();
    be.sync().unwrap();
    let prof = be.device().profile();
    // Every GEMM of a bf16 plan runs on bf16 operands, none of an f32 plan's.
    let want = match precision {
        GemmPrecision::F32 => 0,
        GemmPrecision::Bf16 => prof.gemms.len() as u64,
    };
    assert_eq!(prof.bf16_gemms, want);
    prof.gemm_operand_bytes.clone()
}

fn check(m: &ModelSpec<'static>, mib: u64, mode: Mode, recompute: bool) -> u64 {
    check_in(m, mib, mode, recompute, GemmPrecision::F32)
}

fn check_in(
    m: &ModelSpec<'static>,
    mib: u64,
    mode: Mode,
    recompute: bool,
    precision: GemmPrecision,
) -> u64 {
    let o = PlanOptions {
        reserve: reserved_bytes(&CudaOptions::default()),
        recompute,
        ..PlanOptions::DEFAULT
    };
    let policy = ChunkPolicy::DEFAULT.with_precision(precision);
    let p = cuda_plan(m, m.input, 10, mib << 20, mode, &o, policy).unwrap();
    assert_eq!(p.options.region_align, GEMM_ALIGN);
    let mut padding = 0;
    for (i, b) in p.blocks().iter().enumerate() {
        let ops = operands(&p, i, precision);
        assert!(!ops.is_empty());
        let bad: Vec<_> = ops
            .iter()
            .filter(|o| o.iter().any(|x| x % GEMM_ALIGN != 0))
            .collect();
        assert!(
            bad.is_empty(),
            "{} {} {} block {i}: {} of {} GEMMs with an operand off {GEMM_ALIGN} bytes: {:?}",
            m.name,
            mode.name(),
            precision.name(),
            bad.len(),
            ops.len(),
            &bad[..bad.len().min(4)]
        );
        // The padding is planned: the breakdown adds up to the block's bytes.
        assert_eq!(b.breakdown.total() as u64 * ELEM_BYTES, b.bytes);
        assert!(b.breakdown.padding > 0);
        padding = padding.max(b.breakdown.padding as u64 * ELEM_BYTES);
    }
    assert!(p.peak_bytes() + p.options.reserve <= p.budget);
    eprintln!(
        "{} {} {} {mib} MiB: largest block padding {padding} bytes, peak {} bytes",
        m.name,
        mode.name(),
        precision.name(),
        p.peak_bytes()
    );
    padding
}

#[test]
fn cuda_plans_give_cublas_aligned_operands() {
    check(&zoo::VGG_SMALL, 32, Mode::NeuroFlux, false);
    check(&zoo::VGG_SMALL, 32, Mode::Bp, false);
    check(&zoo::VGG11, 256, Mode::NeuroFlux, true);
    check(&zoo::VGG11, 256, Mode::Bp, false);
    check(&zoo::RESNET18, 512, Mode::NeuroFlux, false);
    check(&zoo::RESNET18, 512, Mode::Bp, false);
}

/// bf16 GEMM operands (`nf train --device cuda --precision bf16`): the scratch they are
/// rounded into is planned with the same alignment, so cuBLAS gets aligned bf16 operands too.
#[test]
fn bf16_cuda_plans_give_cublas_aligned_operands() {
    check_in(
        &zoo::VGG_SMALL,
        32,
        Mode::NeuroFlux,
        false,
        GemmPrecision::Bf16,
    );
    check_in(&zoo::VGG_SMALL, 32, Mode::Bp, false, GemmPrecision::Bf16);
    check_in(&zoo::VGG11, 256, Mode::NeuroFlux, true, GemmPrecision::Bf16);
    check_in(&zoo::RESNET18, 512, Mode::Bp, false, GemmPrecision::Bf16);
}

/// The CPU plans of the same problems are packed: no padding anywhere.
#[test]
fn cpu_plans_stay_packed() {
    for m in [&zoo::VGG_SMALL, &zoo::VGG11] {
        let p = plan(
            m,
            m.input,
            10,
            256 << 20,
            Mode::NeuroFlux,
            &PlanOptions::DEFAULT,
        )
        .unwrap();
        assert!(p.blocks().iter().all(|b| b.breakdown.padding == 0));
    }
}
