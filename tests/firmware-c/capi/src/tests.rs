//! Unit tests of the C ABI from Rust: random (mostly invalid) descriptions through `nf_plan`,
//! and the valid ones through a short training run, must give a code, never a panic.
use core::ffi::c_void;

use super::*;

/// A small seeded generator (SplitMix64).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u32 {
        (self.next() % n) as u32
    }
    /// Mostly small values, sometimes 0 or huge.
    fn field(&mut self, small: u64) -> u32 {
        match self.below(20) {
            0 => 0,
            1 => u32::MAX - self.below(3),
            2 => 1 << self.below(31),
            _ => self.below(small) + 1,
        }
    }
}

unsafe extern "C" fn read(
    _user: *mut c_void,
    _split: u32,
    index: u32,
    values: *mut f32,
    n_values: u32,
    label: *mut u32,
) -> i32 {
    // SAFETY: the library passes `n_values` writable floats and a writable label.
    let v = unsafe { core::slice::from_raw_parts_mut(values, n_values as usize) };
    for (i, x) in v.iter_mut().enumerate() {
        *x = ((i as u32 ^ index) % 7) as f32 - 3.0;
    }
    // SAFETY: as above.
    unsafe { *label = index % 2 };
    0
}

const CODES: &[i32] = &[
    NF_OK,
    NF_E_MODEL,
    NF_E_CAPACITY,
    NF_E_OPTIONS,
    NF_E_BUDGET,
    NF_E_TOO_LARGE,
];

#[test]
fn trainer_fits_its_c_struct() {
    assert!(core::mem::size_of::<train::Trainer>() + 8 <= NF_TRAINER_WORDS * 8);
}

#[test]
fn random_descriptions_plan_or_fail_with_a_code() {
    let mut g = Gen(17);
    let (mut planned, mut trained) = (0, 0);
    for _ in 0..3000 {
        let n_units = g.below(5) + 1;
        let mut unit_ops = [0u32; 8];
        let mut ops = [nf_op::default(); NF_MAX_OPS];
        let mut n_ops = 0usize;
        for u in unit_ops.iter_mut().take(n_units as usize) {
            *u = g.below(5) + 1;
            for _ in 0..*u {
                ops[n_ops] = nf_op {
                    kind: g.below(10),
                    out: g.field(16),
                    k: g.field(5),
                    stride: g.field(3),
                    pad: if g.below(2) == 0 { 0 } else { g.field(2) },
                    bias: g.below(3),
                };
                n_ops += 1;
            }
        }
        let model = nf_model {
            ops: ops.as_ptr(),
            n_ops: n_ops as u32,
            unit_ops: unit_ops.as_ptr(),
            n_units,
            in_c: g.field(3),
            in_h: g.field(24),
            in_w: g.field(24),
            classes: g.field(10),
            head_pool: g.below(4),
        };
        let mut o = nf_options {
            mode: 0,
            f_max: 0,
            f_min: 0,
            ll_filters: 0,
            b_min: 0,
            b_max: 0,
            homogeneity: 0,
        };
        // SAFETY: a valid, writable nf_options.
        unsafe { nf_options_default(&mut o) };
        o.mode = g.below(4);
        if g.below(10) == 0 {
            o.b_min = g.field(8);
            o.f_min = g.field(8);
        }
        let budget = u64::from(g.below(1 << 22));
        let mut info = nf_plan_info::default();
        // SAFETY: pointers to valid structs with `n_ops` / `n_units` entries.
        let rc = unsafe { nf_plan(&model, &o, budget, 8, &mut info) };
        assert!(CODES.contains(&rc), "nf_plan returned {rc}");
        if rc != NF_OK {
            continue;
        }
        planned += 1;
        assert_eq!(
            info.memory_bytes,
            info.arena_bytes + info.store_bytes + info.order_bytes
        );
        assert!(info.memory_bytes <= budget);
        if info.memory_bytes > 4 << 20 || trained >= 40 {
            continue;
        }
        // Train it: one epoch per block on 8 samples, 3 held out.
        let mut mem = vec![0f32; info.memory_bytes as usize / 4];
        let mut t = nf_trainer {
            opaque: [0; NF_TRAINER_WORDS],
        };
        let data = nf_data {
            read: Some(read),
            on_epoch: None,
            user: core::ptr::null_mut(),
            n_train: 8,
            n_val: 0,
            n_test: 3,
        };
        // SAFETY: a valid, writable nf_schedule.
        let mut s = unsafe {
            let mut s = core::mem::zeroed();
            nf_schedule_default(&mut s);
            s
        };
        s.epochs = 1;
        let model_classes = model.classes;
        // SAFETY: valid pointers; `mem` holds `memory_bytes`, the trainer outlives its use.
        unsafe {
            let rc = nf_init(
                &mut t,
                &model,
                &o,
                budget,
                mem.as_mut_ptr(),
                mem.len() * 4,
                &data,
                &s,
            );
            if model_classes < 2 {
                // Labels 0 and 1 are needed; such a model cannot have planned.
                unreachable!();
            }
            assert_eq!(rc, NF_OK);
            assert_eq!(nf_train(&mut t), NF_OK);
            let mut r = nf_result::default();
            assert_eq!(nf_get_result(&mut t, &mut r), NF_OK);
            assert_eq!(r.blocks_done, info.n_blocks);
            assert!(r.exit >= 0);
        }
        trained += 1;
    }
    eprintln!("{planned} of 3000 random descriptions planned, {trained} trained");
    assert!(planned > 50 && trained > 10);
}
