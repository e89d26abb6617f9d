//! Decoding rate of an image folder (`--data DIR` of PNG/JPEG files): the header pass
//! (`data::describe_with`) and the full load (`data::load_with`: headers, then decoding on
//! worker threads into the set), in images per second.
//!
//! ```text
//! cargo bench --bench decode_images -- --dir /dev/shm/fmnist-png --threads 2 --reps 3
//! ```
//!
//! `benches/decode_images.py` writes the folder (the full Fashion-MNIST as 70,000 PNG files)
//! and times PIL on the same files for comparison.
use std::path::PathBuf;
use std::time::Instant;

use nf_host::data::{self, DataOptions};

fn main() {
    let mut dir = None;
    let mut threads = 2;
    let mut reps = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--threads" => threads = args.next().and_then(|v| v.parse().ok()).unwrap_or(2),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(3),
            "--bench" => {}
            other => {
                eprintln!("unknown argument {other} (--dir DIR --threads N --reps R)");
                std::process::exit(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("decode_images: --dir DIR is needed (benches/decode_images.py writes one)");
        return;
    };
    let opts = DataOptions {
        threads,
        ..DataOptions::default()
    };
    for rep in 0..reps {
        let t0 = Instant::now();
        let info = data::describe_with(&dir, &opts).unwrap_or_else(|e| panic!("{e}"));
        let headers = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let s = data::load_with(&dir, u64::MAX, &opts).unwrap_or_else(|e| panic!("{e}"));
        let load = t1.elapsed().as_secs_f64();
        let n = (s.train.len() + s.test.len()) as f64;
        println!(
            "rep {rep}: {n} images of {}x{}x{}, threads {threads}: header pass {headers:.2} s \
             ({:.0} images/s), load (headers + decoding) {load:.2} s ({:.0} images/s)",
            info.shape.c,
            info.shape.h,
            info.shape.w,
            n / headers,
            n / load
        );
    }
}
