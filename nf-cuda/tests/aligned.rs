//! Aligned GEMM operands (issue 31): the emulated device's memory starts on a `cudaMalloc`
//! boundary, and the engine with [`EmuBackend::set_region_align`] trains a layout whose
//! regions are aligned for cuBLAS exactly as the packed layout trains on the packed engine,
//! every GEMM operand then on a 128-byte boundary.
use nf_core::backend::Backend;
use nf_core::layout::{BlockLayout, Kernels, SegMode, Workspace, GEMM_ALIGN};
use nf_core::model::MAX_UNITS;
use nf_core::optim::Sgd;
use nf_core::rng::Rng;
use nf_core::step;
use nf_cuda::emu::{EmuBackend, EmuDevice, EmuOptions, BASE_ALIGN};

#[test]
fn the_emulated_memory_starts_on_a_cuda_malloc_boundary() {
    for len in [1, 33, 1000, 1 << 16] {
        let d = EmuDevice::new(len, EmuOptions::default()).unwrap();
        assert_eq!(d.mem().len(), len);
        assert_eq!(d.mem().as_ptr() as usize % BASE_ALIGN, 0);
        let z = EmuDevice::zeroed(len, EmuOptions::default()).unwrap();
        assert_eq!(z.mem().as_ptr() as usize % BASE_ALIGN, 0);
        assert!(z.mem().iter().all(|&v| v == 0.0));
    }
    assert!(BASE_ALIGN.is_multiple_of(GEMM_ALIGN));
}

/// The TINY model's two units as one block (local mode, batch 6), regions aligned to
/// `align` bytes, with the CUDA backend's workspace for one chunk per convolution.
fn layout(align: usize) -> BlockLayout<'static> {
    let at = |ws| {
        BlockLayout::with_kernels(
            &nf_conformance::TINY,
            nf_conformance::TINY.input,
            3,
            SegMode::Local,
            0,
            1,
            &[5; MAX_UNITS],
            6,
            &Kernels {
                workers: 1,
                workspace: ws,
                region_align: align,
                precision: nf_core::layout::Precision::F32,
            },
        )
    };
    let ws = nf_core::probe::block_workspace(&at(Workspace::Columns), |k| {
        nf_cuda::workspace_floats_aligned(k, 6, align / 4)
    });
    at(Workspace::Fixed(ws))
}

/// Train `l` for three steps on the emulated engine aligned as `l`; the losses, every
/// parameter of every op, and the GEMM operands the engine asked for.
fn train(l: &BlockLayout) -> (Vec<f32>, Vec<f32>, Vec<[usize; 3]>) {
    let mut be = EmuBackend::emulated(l.floats, EmuOptions::default()).unwrap();
    be.set_region_align(l.kernels.region_align);
    step::init_block(&mut be, l, &mut Rng::new(3)).unwrap();
    let x: Vec<f32> = (0..6 * 2 * 10 * 9).map(|i| (i % 13) as f32 * 0.1).collect();
    be.write(l.input.prefix(x.len()), &x);
    be.write(l.labels.prefix(6), &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    let mut losses = Vec::new();
    for _ in 0..3 {
        let mut st = [step::SegStats::default(); 2];
        step::train_step(&mut be, l, 6, &Sgd::default(), 0.05, &mut st).unwrap();
        step::collect_scores(&mut be, &mut st);
        losses.extend(st.map(|s| s.loss));
    }
    let mut params = Vec::new();
    for k in 0..l.n_segments() {
        let s = l.segment(k);
        for o in &s.ops[..s.n_ops] {
            let mut v = vec![0.0; o.param.len()];
            be.read(o.param, &mut v);
            params.extend(v);
        }
    }
    be.sync().unwrap();
    (
        losses,
        params,
        be.device().profile().gemm_operand_bytes.clone(),
    )
}

#[test]
fn an_aligned_layout_trains_as_the_packed_one_with_aligned_gemm_operands() {
    let packed = layout(4);
    let aligned = layout(GEMM_ALIGN);
    assert_eq!(packed.breakdown.padding, 0);
    assert!(aligned.breakdown.padding > 0);
    assert!(aligned.floats > packed.floats);
    let (lp, pp, _) = train(&packed);
    let (la, pa, ops) = train(&aligned);
    // Same arithmetic in the same order: the same bits.
    assert_eq!(lp, la);
    assert_eq!(pp.len(), pa.len());
    assert!(pp.iter().zip(&pa).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(!ops.is_empty());
    assert!(
        ops.iter().flatten().all(|o| o % GEMM_ALIGN == 0),
        "GEMM operands off {GEMM_ALIGN} bytes: {ops:?}"
    );
}
