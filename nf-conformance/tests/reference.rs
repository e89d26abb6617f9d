//! nf-core's reference backend runs the whole suite against itself (every output, canary and
//! workspace bit for bit): the suite's cases, plans and checks hold for the backend they
//! compare with. Also what the suite covers: average pooling to 3x3 among the op cases, and
//! the worst-error table the CUDA subjects print.
use nf_conformance::{conformance_suite, scaled_error, Subject, Tol, Worst};
use nf_core::probe::KernelCall;
use nf_core::reference::ReferenceBackend;

/// The reference backend over the suite's arena, with one sample's columns as workspace.
struct Reference;

impl Subject for Reference {
    type B<'a> = ReferenceBackend<'a>;
    fn name(&self) -> String {
        "reference".into()
    }
    /// Bit for bit: the same code on the same data.
    fn tol(&self) -> Tol {
        Tol {
            gemm: 0.0,
            bn: 0.0,
            exact: 0.0,
            steps: 0.0,
        }
    }
    /// The reference's single-threaded steps at real model sizes add minutes to every test
    /// run and compare the reference with itself; the tiny models cover the suite's paths.
    fn full_size(&self) -> bool {
        false
    }
    fn workspace(&self, k: &KernelCall) -> usize {
        match *k {
            KernelCall::ConvForward(g) | KernelCall::ConvBackward { g, .. } => g.cols_len(),
            _ => 0,
        }
    }
    fn backend<'a>(&'a self, arena: &'a mut [f32]) -> ReferenceBackend<'a> {
        ReferenceBackend::new(arena)
    }
}

conformance_suite!([Reference]);

/// Average pooling runs to 1x1, 2x2, 3x3 and 4x4 (forward and backward) on the op shapes,
/// and every output is measured: the reference against itself has no error at all.
#[test]
fn pooling_cases_include_every_head_size() {
    let worst = nf_conformance::ops_elementwise(&Reference);
    for k in 1..=4 {
        for out in ["y", "dx"] {
            let name = format!("avgpool {k} {out}");
            let (err, cases) = worst
                .get(&name)
                .unwrap_or_else(|| panic!("no case measures {name}:\n{}", worst.table("")));
            assert!(cases >= 7, "{name}: {cases} cases");
            assert_eq!(err, 0.0, "{name}");
        }
    }
    for name in [
        "maxpool y",
        "maxpool dx",
        "relu",
        "relu dy",
        "add y",
        "fill",
        "copy",
    ] {
        assert!(worst.get(name).is_some(), "{name} not measured");
    }
    assert_eq!(worst.max(), 0.0);
}

/// The table keeps each output's largest error and its number of cases, and prints one line
/// per output.
#[test]
fn the_worst_error_table_keeps_the_largest_error_per_output() {
    assert_eq!(scaled_error(&[1.0, 2.5], &[1.0, 2.0]), 0.25);
    assert_eq!(scaled_error(&[f32::NAN, 2.0], &[f32::NAN, 2.0]), 0.0);
    assert_eq!(scaled_error(&[0.0; 3], &[0.0; 3]), 0.0);
    let mut w = Worst::default();
    w.note(&[("conv y".into(), 1e-6), ("conv dw".into(), 3e-6)]);
    w.note(&[("conv y".into(), 4e-6)]);
    w.note(&[("conv y".into(), 2e-6)]);
    assert_eq!(w.get("conv y"), Some((4e-6, 3)));
    assert_eq!(w.get("conv dw"), Some((3e-6, 1)));
    assert_eq!(w.get("conv dx"), None);
    assert_eq!(w.max(), 4e-6);
    let t = w.table("emulated");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert!(
        lines[0].starts_with("emulated: worst error per output"),
        "{t}"
    );
    assert!(
        lines[1].contains("conv dw")
            && lines[1].contains("1 cases")
            && lines[1].contains("3.00e-6"),
        "{t}"
    );
    assert!(
        lines[2].contains("conv y") && lines[2].contains("3 cases") && lines[2].contains("4.00e-6"),
        "{t}"
    );
}
