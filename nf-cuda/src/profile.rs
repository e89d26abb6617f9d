//! What a device is asked to do, counted: kernel launches (by kernel), GEMM calls with their
//! shapes and FLOPs, host synchronisations, transfers. The emulated device ([`crate::emu`])
//! records a [`Profile`] as it runs; [`ProfileDevice`] records the same without computing
//! anything (no memory, no kernel library), so the launch profile of a whole VGG-11 step is
//! cheap to take. Both run the backend's real logic ([`crate::engine::Engine`]), so the counts
//! are those a GPU would receive.
use nf_core::backend::Backend;
use nf_core::layout::{block_geoms, op_geom, BlockLayout};
use nf_core::model::Op;
use nf_core::optim::Sgd;

use crate::engine::{conv_chunk_in, Device, Engine, REDUCE_FLOATS};
use crate::error::CudaError;
use crate::gemm::{CublasGemm, GemmPrecision};
use crate::kernels::{Arg, Kernel};

/// The shape of one GEMM call (`batch` products of `m×k` by `k×n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmShape {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Products in the call.
    pub batch: usize,
}

impl GemmShape {
    /// Floating-point operations (a multiply-add is two).
    pub const fn flops(&self) -> u64 {
        2 * (self.m * self.n * self.k * self.batch) as u64
    }

    /// The smallest of `m`, `n` and `k`: a GEMM is efficient on a GPU only when every
    /// dimension is large.
    pub fn min_dim(&self) -> usize {
        self.m.min(self.n).min(self.k)
    }

    /// The shape of a cuBLAS call (column-major `m`, `n` are the row-major `n`, `m`).
    pub fn of(g: &CublasGemm) -> Self {
        GemmShape {
            m: g.n.max(0) as usize,
            n: g.m.max(0) as usize,
            k: g.k.max(0) as usize,
            batch: g.batch.max(0) as usize,
        }
    }
}

/// Counters of the work a device received. Subtract two snapshots ([`Profile::since`]) to get
/// one step's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Launches per kernel, indexed by `Kernel as usize`.
    pub launches: Vec<u64>,
    /// Every GEMM call, in order.
    pub gemms: Vec<GemmShape>,
    /// The byte offsets of every GEMM call's three operands (cuBLAS's A, B and C) from the
    /// device memory's start, in the order of [`Profile::gemms`]: whether the plan gives
    /// cuBLAS aligned pointers (bf16 operands included).
    pub gemm_operand_bytes: Vec<[usize; 3]>,
    /// GEMM calls with bf16 operands (`cublasGemmStridedBatchedEx`), of [`Profile::gemms`].
    pub bf16_gemms: u64,
    /// Host synchronisations: waits for the device's queued work (`sync`) and downloads (which
    /// wait too).
    pub waits: u64,
    /// Non-blocking error checks (the step's `sync` on a device that does not wait).
    pub polls: u64,
    /// Host-to-device copies.
    pub uploads: u64,
    /// Bytes copied to the device.
    pub upload_bytes: u64,
    /// Device-to-host copies (each one waits).
    pub downloads: u64,
    /// Bytes copied from the device.
    pub download_bytes: u64,
    /// Device allocations made (the backend makes its one allocation before any step).
    pub allocations: u64,
}

impl Profile {
    /// Count a launch of `k`.
    pub fn launch(&mut self, k: Kernel) {
        let i = k as usize;
        if self.launches.len() <= i {
            self.launches.resize(Kernel::ALL.len(), 0);
        }
        self.launches[i] += 1;
    }

    /// Count a GEMM call.
    pub fn gemm(&mut self, g: &CublasGemm) {
        self.gemms.push(GemmShape::of(g));
        let eb = g.operands.operand_bytes();
        // Saturating: a call may be recorded before the device refuses it.
        let bytes = |eb: usize, off: usize| off.saturating_mul(eb);
        self.gemm_operand_bytes
            .push([bytes(eb, g.a), bytes(eb, g.b), bytes(4, g.c)]);
        if g.operands == GemmPrecision::Bf16 {
            self.bf16_gemms += 1;
        }
    }

    /// GEMM operands (of [`Profile::gemm_operand_bytes`]) whose offset is not a multiple of
    /// `align` bytes.
    pub fn misaligned_operands(&self, align: usize) -> usize {
        self.gemm_operand_bytes
            .iter()
            .flatten()
            .filter(|&&o| o % align != 0)
            .count()
    }

    /// Count an upload of `elems` elements.
    pub fn upload(&mut self, elems: usize) {
        self.uploads += 1;
        self.upload_bytes += 4 * elems as u64;
    }

    /// Count a download of `elems` elements (a host synchronisation).
    pub fn download(&mut self, elems: usize) {
        self.downloads += 1;
        self.download_bytes += 4 * elems as u64;
        self.waits += 1;
    }

    /// Kernel launches in all.
    pub fn total_launches(&self) -> u64 {
        self.launches.iter().sum()
    }

    /// Launches of `k`.
    pub fn launches_of(&self, k: Kernel) -> u64 {
        self.launches.get(k as usize).copied().unwrap_or(0)
    }

    /// FLOPs of every GEMM call.
    pub fn gemm_flops(&self) -> u64 {
        self.gemms.iter().map(GemmShape::flops).sum()
    }

    /// FLOPs of the GEMM calls whose smallest dimension is at least `dim`.
    pub fn gemm_flops_with_min_dim(&self, dim: usize) -> u64 {
        self.gemms
            .iter()
            .filter(|g| g.min_dim() >= dim)
            .map(GemmShape::flops)
            .sum()
    }

    /// What was counted after `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Profile) -> Profile {
        let launches = (0..Kernel::ALL.len())
            .map(|i| {
                let now = self.launches.get(i).copied().unwrap_or(0);
                now - earlier.launches.get(i).copied().unwrap_or(0)
            })
            .collect();
        Profile {
            launches,
            gemms: self.gemms[earlier.gemms.len().min(self.gemms.len())..].to_vec(),
            gemm_operand_bytes: self.gemm_operand_bytes[earlier
                .gemm_operand_bytes
                .len()
                .min(self.gemm_operand_bytes.len())..]
                .to_vec(),
            bf16_gemms: self.bf16_gemms - earlier.bf16_gemms,
            waits: self.waits - earlier.waits,
            polls: self.polls - earlier.polls,
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
            allocations: self.allocations - earlier.allocations,
        }
    }
}

/// A device that computes nothing and records what it is asked to do: the engine's logic
/// (argument checks, chunking, workspace carving, GEMM mapping) runs in full, the kernels and
/// GEMMs do not. Downloads read zeros.
#[derive(Debug)]
pub struct ProfileDevice {
    len: usize,
    profile: Profile,
}

impl ProfileDevice {
    /// A device of `len` elements.
    pub fn new(len: usize) -> Self {
        ProfileDevice {
            len,
            profile: Profile {
                allocations: 1,
                ..Profile::default()
            },
        }
    }

    /// What it was asked to do so far.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
}

impl Device for ProfileDevice {
    fn mem_len(&self) -> usize {
        self.len
    }

    fn upload(&mut self, _offset: usize, src: &[f32]) -> Result<(), CudaError> {
        self.profile.upload(src.len());
        Ok(())
    }

    fn download(&mut self, _offset: usize, dst: &mut [f32]) -> Result<(), CudaError> {
        self.profile.download(dst.len());
        dst.fill(0.0);
        Ok(())
    }

    unsafe fn launch(
        &mut self,
        k: Kernel,
        _threads: usize,
        _args: &[Arg],
    ) -> Result<(), CudaError> {
        self.profile.launch(k);
        Ok(())
    }

    fn gemm(&mut self, g: &CublasGemm) -> Result<(), CudaError> {
        self.profile.gemm(g);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), CudaError> {
        self.profile.waits += 1;
        Ok(())
    }

    fn poll(&mut self) -> Result<(), CudaError> {
        self.profile.polls += 1;
        Ok(())
    }
}

/// The CUDA backend's logic over a device that only counts.
pub type ProfileBackend = Engine<ProfileDevice>;

impl Engine<ProfileDevice> {
    /// A counting backend with an arena of `arena` elements (plus the device workspace). Its
    /// profile starts with the one allocation and the launch that clears the score
    /// accumulators.
    pub fn profiling(arena: usize) -> Self {
        Engine::from_device(ProfileDevice::new(arena + REDUCE_FLOATS), arena)
            .expect("the device is exactly as large as the arena and the workspace")
    }
}

/// The work of one training step of block `l` over `n` samples on the counting device: the
/// batch's input and labels uploaded (as a feed does), then [`nf_core::step::train_step`].
///
/// # Panics
/// If the step is refused (`n` larger than the layout's batch, or zero).
pub fn step_profile(l: &BlockLayout, n: usize) -> Profile {
    step_profile_in(l, n, GemmPrecision::F32)
}

/// [`step_profile`] with GEMM operands of `p` (the layout's workspace sized for it): in bf16
/// the launches include the rounding of the operands ([`Kernel::RoundBf16`]).
///
/// # Panics
/// As [`step_profile`].
pub fn step_profile_in(l: &BlockLayout, n: usize, p: GemmPrecision) -> Profile {
    let mut be = Engine::profiling(l.floats);
    be.set_region_align(l.kernels.region_align);
    be.set_gemm_precision(p);
    let before = be.device().profile().clone();
    let per = l.model.unit_input(l.input_shape, l.first).len();
    be.write(l.input.prefix(n * per), &vec![0.0; n * per]);
    be.write(l.labels.prefix(n), &vec![0.0; n]);
    nf_core::step::train_step(&mut be, l, n, &Sgd::default(), 0.01, &mut [])
        .unwrap_or_else(|e| panic!("a step of {n} samples: {e:?}"));
    be.device().profile().since(&before)
}

/// The columns of [`profile_row`], as a Markdown table header.
pub const PROFILE_HEADER: &str = "| mode | GEMM operands | block | units | batch | conv chunk | launches/step | of which bf16 roundings | at half batch | layers | launches/layer | GEMM calls | GFLOP/step | FLOPs in GEMMs min dim >= 64 | host syncs/step | uploads/step | allocations/step |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// One row of the launch-profile table for block `i` (units `l.first..=l.last`) of a plan in
/// mode `mode` with GEMM operands of `p`: a step at the block's batch and one at half of it.
pub fn profile_row(mode: &str, p: GemmPrecision, i: usize, l: &BlockLayout) -> String {
    let full = step_profile_in(l, l.batch, p);
    let half = step_profile_in(l, (l.batch / 2).max(1), p);
    // Layers: every op of every segment but the flatten (a no-op).
    let layers: usize = (0..l.n_segments())
        .map(|k| {
            let s = l.segment(k);
            s.ops[..s.n_ops]
                .iter()
                .filter(|o| !matches!(o.op, Op::Flatten))
                .count()
        })
        .sum();
    // The chunk of the block's largest and smallest convolution samples.
    let align = l.kernels.align_elems();
    let mut chunks: Vec<usize> = Vec::new();
    for k in 0..l.n_segments() {
        let s = l.segment(k);
        for slot in &s.ops[..s.n_ops] {
            match slot.op {
                Op::Conv { .. } => {
                    let g = op_geom(&slot.op, slot.input, l.batch);
                    chunks.push(conv_chunk_in(&g, s.cols.len(), align, p));
                }
                Op::BasicBlock { .. } => {
                    let (a, b, c) = block_geoms(&slot.op, slot.input, l.batch);
                    chunks.extend([a, b, c].map(|g| conv_chunk_in(&g, s.cols.len(), align, p)));
                }
                _ => {}
            }
        }
    }
    let (lo, hi) = (
        chunks.iter().min().copied().unwrap_or(0),
        chunks.iter().max().copied().unwrap_or(0),
    );
    let flops = full.gemm_flops();
    format!(
        "| {mode} | {} | {i} | {}-{} | {} | {} | {} | {} | {} | {layers} | {:.1} | {} | {:.1} | {:.1}% | {} | {} | {} |",
        p.name(),
        l.first,
        l.last,
        l.batch,
        if lo == hi { format!("{lo}") } else { format!("{lo}-{hi}") },
        full.total_launches(),
        full.launches_of(Kernel::RoundBf16),
        half.total_launches(),
        full.total_launches() as f64 / layers as f64,
        full.gemms.len(),
        flops as f64 / 1e9,
        100.0 * full.gemm_flops_with_min_dim(64) as f64 / flops.max(1) as f64,
        full.waits,
        full.uploads,
        full.allocations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{gemm_call, RowGemm};

    #[test]
    fn shapes_flops_and_snapshots() {
        let g = gemm_call(&RowGemm::single(false, true, 64, 576, 2048, 0, 0, 0, 0.0)).unwrap();
        let s = GemmShape::of(&g);
        assert_eq!((s.m, s.n, s.k, s.batch), (64, 576, 2048, 1));
        assert_eq!(s.flops(), 2 * 64 * 576 * 2048);
        assert_eq!(s.min_dim(), 64);
        let mut d = ProfileDevice::new(10);
        // SAFETY: the profiling device touches no memory.
        unsafe { d.launch(Kernel::Fill, 5, &[]).unwrap() };
        let before = d.profile().clone();
        // SAFETY: as above.
        unsafe {
            d.launch(Kernel::Fill, 5, &[]).unwrap();
            d.launch(Kernel::Copy, 5, &[]).unwrap();
        }
        d.gemm(&g).unwrap();
        d.download(0, &mut [0.0; 3]).unwrap();
        d.poll().unwrap();
        let step = d.profile().since(&before);
        assert_eq!(step.total_launches(), 2);
        assert_eq!(step.launches_of(Kernel::Fill), 1);
        assert_eq!(step.gemms, vec![s]);
        assert_eq!((step.waits, step.polls, step.download_bytes), (1, 1, 12));
        assert_eq!(step.allocations, 0);
        assert_eq!(step.gemm_flops_with_min_dim(65), 0);
        assert_eq!(step.gemm_flops_with_min_dim(64), s.flops());
    }
}
