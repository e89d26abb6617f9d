//! The launch profile of the CUDA backend's training steps, without a GPU: VGG-11 (3x32x32,
//! 10 classes) planned for the CUDA backend as `nf train --device cuda` plans it
//! (`nf_host::run_plan::cuda_plan`), then one training step of every block on a device that only
//! counts what it is asked (`nf_cuda::ProfileDevice`; the backend's real logic runs, the
//! kernels do not): kernel launches, GEMM calls and their FLOPs, the share of FLOPs in GEMMs
//! whose smallest dimension is at least 64, host synchronisations, uploads and allocations per
//! step, and the launches of a step at half the batch.
//!
//! ```text
//! cargo bench --bench gpu_profile                                  # 256 MiB, neuroflux and bp
//! cargo bench --bench gpu_profile -- --budget-mib 1024 --parts 4 --model vgg16
//! cargo bench --bench gpu_profile -- --precision bf16             # bf16 GEMM operands
//! ```
use nf_core::plan::{Mode, PlanOptions};
use nf_core::zoo;
use nf_cuda::profile::{profile_row, PROFILE_HEADER};
use nf_cuda::{reserved_bytes, ChunkPolicy, CudaOptions, GemmPrecision};
use nf_host::run_plan::cuda_plan;

fn main() {
    let (mut budget, mut parts, mut model) = (256u64 << 20, ChunkPolicy::DEFAULT.parts, "vgg11");
    let mut precision = GemmPrecision::F32;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--budget-mib" => budget = val().parse::<u64>().expect("--budget-mib N") << 20,
            "--parts" => parts = val().parse().expect("--parts N"),
            "--model" => model = val(),
            "--precision" => {
                precision = match val().as_str() {
                    "f32" => GemmPrecision::F32,
                    "bf16" => GemmPrecision::Bf16,
                    other => panic!("--precision {other}: f32 or bf16"),
                }
            }
            // Flags cargo bench passes on.
            "--bench" => {}
            other => panic!("unknown flag {other} (see the file's documentation)"),
        }
    }
    let m = zoo::by_name(model).unwrap_or_else(|| panic!("--model {model}: not a zoo model"));
    let o = PlanOptions {
        reserve: reserved_bytes(&CudaOptions::default()),
        ..PlanOptions::DEFAULT
    };
    println!(
        "{model} on {}x{}x{}, budget {} MiB, {} GEMM operands, chunk policy: at most {parts} chunks per convolution, grown where the budget allows",
        m.input.c,
        m.input.h,
        m.input.w,
        budget >> 20,
        precision.name()
    );
    println!("{PROFILE_HEADER}");
    for mode in [Mode::NeuroFlux, Mode::Bp] {
        let policy = ChunkPolicy { parts, precision };
        let p = cuda_plan(m, m.input, 10, budget, mode, &o, policy)
            .unwrap_or_else(|e| panic!("{model} does not plan: {e:?}"));
        for i in 0..p.blocks().len() {
            println!("{}", profile_row(mode.name(), precision, i, &p.layout(i)));
        }
    }
}
