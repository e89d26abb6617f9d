//! Data-set inputs: IDX directories (raw and gzipped, from the bundled Fashion-MNIST subset or
//! made up), CIFAR-10/100 batch directories, gzip-layer damage, and the checks of
//! `describe`, `load` and `load_test` on them.
//!
//! Memory bounds (the loaders' documented contract, `nf_host::data` module docs): `describe`
//! reads headers only, so it may allocate [`DESCRIBE_BOUND`] (read buffer, gzip decoder,
//! paths); `load` and `load_test` may allocate the set they return, never more than the
//! `limit` they are given, plus [`nf_host::data::DataInfo::load_overhead`] (1 MiB plus 4 KiB a
//! channel: read buffers, the gzip decoder, per-channel statistics).
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use flate2::Compression;
use nf_host::cli::{plan_command, Cli, Command};
use nf_host::data::{describe, load, load_test};

use super::text::PLAN_BOUND;
use super::{interesting_u32, mutate_bytes, Probe, Rng, KIB, MIB};

/// Most bytes `describe` may allocate: a 64 KiB read buffer, a gzip decoder (its 32 KiB
/// window, its own 32 KiB buffer and state), the paths and the error; 256 KiB is generous.
pub const DESCRIBE_BOUND: u64 = 256 * KIB;
/// `load_overhead` for the most channels a file format here has (3): the bound beside the
/// data set when `describe` cannot say what the set holds.
pub const LOAD_SLACK: u64 = MIB + 3 * 4096;

/// A directory of data files: (relative path, contents or a directory), and the `limit`.
#[derive(Clone, Debug)]
pub struct DirInput {
    pub files: Vec<(String, Node)>,
    pub limit: u64,
}

#[derive(Clone, Debug)]
pub enum Node {
    File(Vec<u8>),
    Dir,
}

/// The file holding a saved input's `limit`.
const LIMIT_FILE: &str = "fuzz-limit.txt";

impl DirInput {
    /// Writes the files into `dir` (emptied first).
    pub fn write(&self, dir: &Path) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        for (name, node) in &self.files {
            let p = dir.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            match node {
                Node::File(b) => {
                    if p.is_dir() {
                        continue;
                    }
                    fs::write(&p, b).unwrap();
                }
                // A placeholder inside, so that git keeps it in the corpus.
                Node::Dir => {
                    if p.is_file() {
                        continue;
                    }
                    fs::create_dir_all(&p).unwrap();
                    fs::write(p.join(".keep"), b"").unwrap();
                }
            }
        }
    }

    /// Saves the input for the corpus: its files and its limit.
    pub fn save(&self, dir: &Path) {
        self.write(dir);
        fs::write(dir.join(LIMIT_FILE), self.limit.to_string()).unwrap();
    }
}

/// The limit saved with a corpus directory (16 MiB if none).
pub fn saved_limit(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(LIMIT_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16 * MIB)
}

/// `s` as the loaders print a path or argument (line breaks become spaces).
pub fn shown(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// `describe`, `load` and `load_test` on `arg` with `limit`: each ends in `Ok` or a one-line
/// error naming `arg` (every file of a directory has its path as a prefix), within its memory
/// bound; the answers agree with each other (a set `load` returns is the one `describe`
/// announced, and fits `limit`). Returns whether `describe` accepted `arg`.
pub fn check_data(arg: &str, limit: u64, probe: &mut Probe) -> bool {
    let name = shown(arg);
    let info = match probe.call("describe", DESCRIBE_BOUND, Some(&name), || describe(arg)) {
        Some(Ok(info)) => Some(info),
        _ => None,
    };
    // What the description says it will take, as the planner asks it (no overflow).
    let info = info.filter(|i| {
        let sizes = probe.call("DataInfo sizes", KIB, None, || {
            Ok::<_, String>((i.bytes(), i.load_overhead(), i.split_overhead(0.5)))
        });
        matches!(sizes, Some(Ok(_)))
    });
    let (bound, test_bound) = match &info {
        Some(i) => (
            limit.min(i.bytes()) + i.load_overhead(),
            limit.min(i.test as u64 * i.sample_bytes()) + i.load_overhead(),
        ),
        // Refused by `describe`: `load` refuses at the same check or earlier; `load_test`
        // does not read the training files, so it may succeed.
        None => (DESCRIBE_BOUND, limit + LOAD_SLACK),
    };
    if let Some(r) = probe.call("load", bound, Some(&name), || load(arg, limit)) {
        match (&info, r) {
            (None, Ok(_)) => probe.fail("load succeeded where describe failed"),
            (Some(i), Ok(s)) => {
                let bytes = s.train.bytes() + s.test.bytes();
                if s.train.len() != i.train
                    || s.test.len() != i.test
                    || s.train.shape() != i.shape
                    || bytes != i.bytes()
                    || bytes > limit
                {
                    probe.fail(format!(
                        "load returned {}+{} samples ({bytes} B) but describe said {i:?}, \
                         limit {limit}",
                        s.train.len(),
                        s.test.len()
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(Ok(t)) = probe.call("load_test", test_bound, Some(&name), || {
        load_test(arg, limit)
    }) {
        if t.bytes() > limit || info.is_some_and(|i| t.len() != i.test) {
            probe.fail(format!(
                "load_test returned {} samples ({} B), limit {limit}, describe said {info:?}",
                t.len(),
                t.bytes()
            ));
        }
    }
    info.is_some()
}

/// `nf plan --data arg` at the default budgets and at the largest ones: the data set's
/// description sizes the run's host memory (data, caches), so what it claims must not
/// overflow the plan's arithmetic. `Ok` or a one-line error, within `PLAN_BOUND`.
pub fn check_plan_with_data(arg: &str, probe: &mut Probe) {
    use clap::Parser;
    let max = u64::MAX.to_string();
    for budgets in [&[][..], &["--budget", &max, "--host-budget", &max]] {
        let mut argv = vec!["nf", "plan", "--threads", "1", "--data", arg];
        argv.extend_from_slice(budgets);
        let Ok(Command::Plan(args)) = Cli::try_parse_from(&argv).map(|c| c.cmd) else {
            continue;
        };
        probe.call("plan_command --data", PLAN_BOUND, None, || {
            plan_command(&args)
        });
    }
}

/// A limit: tiny, exactly the valid set's size (or one byte less), or up to 16 MiB.
fn limit(rng: &mut Rng, exact: u64) -> u64 {
    match rng.below(8) {
        0 => *rng.pick(&[0, 1, 512, 4 * KIB]),
        1 => exact,
        2 => exact.saturating_sub(1),
        3 => 64 * KIB,
        4 => MIB,
        _ => 16 * MIB,
    }
}

pub fn gz(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    gz_level(bytes, rng.below(10) as u32)
}

fn gz_level(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// IDX.

pub const IDX_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn idx_images(n: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + pixels.len());
    for x in [0x803, n, rows, cols] {
        v.extend((x as u32).to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + labels.len());
    v.extend(0x801u32.to_be_bytes());
    v.extend((labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// The raw files of `fixtures/fashion-mnist-mcu` (a Fashion-MNIST subset), read once.
fn fixture() -> &'static [Vec<u8>; 4] {
    static F: OnceLock<[Vec<u8>; 4]> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fashion-mnist-mcu");
        IDX_NAMES.map(|n| fs::read(dir.join(n)).expect("fixtures/fashion-mnist-mcu"))
    })
}

/// A valid pair (images, labels) of `n` samples: real Fashion-MNIST images from a random
/// offset of the fixture, or made-up `rows`x`cols` ones.
fn idx_pair(rng: &mut Rng, real: bool, test: bool, n: usize, rc: (usize, usize)) -> [Vec<u8>; 2] {
    if real {
        let f = fixture();
        let (img, lab) = if test { (&f[2], &f[3]) } else { (&f[0], &f[1]) };
        let total = be32(&img[4..8]) as usize;
        let at = rng.below(total - n + 1);
        let px = &img[16 + at * 784..16 + (at + n) * 784];
        [
            idx_images(n, 28, 28, px),
            idx_labels(&lab[8 + at..8 + at + n]),
        ]
    } else {
        let px = rng.bytes(n * rc.0 * rc.1);
        let labels: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
        [idx_images(n, rc.0, rc.1, &px), idx_labels(&labels)]
    }
}

/// An IDX directory, valid or near-valid. With `gzip_damage`, every file is gzipped and the
/// damage goes mostly to the compressed bytes (the gzip layer); otherwise to the IDX bytes.
pub fn gen_idx(rng: &mut Rng, gzip_damage: bool) -> DirInput {
    let real = rng.one_in(2);
    let rc = if rng.one_in(4) {
        (28, 28)
    } else {
        (rng.range(1, 6), rng.range(1, 6))
    };
    let (n_train, n_test) = (rng.range(1, 12), rng.range(1, 6));
    let [a, b] = idx_pair(rng, real, false, n_train, rc);
    let [c, d] = idx_pair(rng, real, true, n_test, rc);
    let mut raw = [a, b, c, d];
    let valid_bytes: u64 =
        (n_train + n_test) as u64 * (if real { 784 } else { rc.0 * rc.1 } + 2) as u64;
    let clean = rng.one_in(8);
    if !clean && (!gzip_damage || rng.one_in(3)) {
        for _ in 0..rng.range(1, 3) {
            let f = rng.below(4);
            if rng.one_in(2) {
                // A header field (magic, count, rows, cols) set to an interesting value.
                let fields = if f.is_multiple_of(2) { 4 } else { 2 };
                let at = 4 * rng.below(fields);
                if raw[f].len() >= at + 4 {
                    let v = interesting_u32(rng, be32(&raw[f][at..]));
                    raw[f][at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
            } else {
                mutate_bytes(rng, &mut raw[f], 3);
            }
        }
    }
    let mut files = Vec::new();
    for (i, data) in raw.into_iter().enumerate() {
        let zipped = gzip_damage || rng.one_in(3);
        let mut bytes = if zipped { gz(&data, rng) } else { data.clone() };
        if gzip_damage && !clean && rng.one_in(2) {
            damage_gzip(rng, &mut bytes, &data);
        }
        // Usually named as it is; sometimes raw under `.gz` or gzip without it.
        let gz_name = if rng.one_in(8) { !zipped } else { zipped };
        let name = format!("{}{}", IDX_NAMES[i], if gz_name { ".gz" } else { "" });
        files.push((name, Node::File(bytes)));
    }
    if !clean && rng.one_in(4) {
        structural(rng, &mut files);
    }
    DirInput {
        files,
        limit: limit(rng, valid_bytes),
    }
}

/// Damage to the gzip stream `z` of `plain`: flipped or set bytes (header flags, deflate
/// blocks, the CRC and length trailer), truncation, trailing garbage, a second member, or a
/// bomb (`plain` then MiBs of zeros, a small file).
fn damage_gzip(rng: &mut Rng, z: &mut Vec<u8>, plain: &[u8]) {
    let n = z.len();
    match rng.below(8) {
        0 => mutate_bytes(rng, z, 4),
        1 if n > 10 => z.truncate(rng.range(0, n - 1)),
        2 if n >= 8 => {
            let at = n - 8 + rng.below(8);
            z[at] ^= 1 << rng.below(8);
        }
        // FLG: FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT and reserved bits.
        3 if n > 3 => z[3] = rng.u64() as u8,
        4 => {
            let k = rng.range(1, 64);
            z.extend(rng.bytes(k));
        }
        5 => {
            let k = rng.range(0, 64);
            let mut extra = rng.bytes(k);
            if rng.one_in(2) {
                extra = z.clone();
            }
            let member = gz(&extra, rng);
            z.extend(member);
        }
        6 => {
            // A small file inflating to MiBs: the header still claims what it claimed.
            let mut bomb = plain.to_vec();
            bomb.resize(plain.len() + (rng.range(1, 4) << 20), 0);
            *z = gz_level(&bomb, 1);
        }
        _ if n > 10 => {
            let at = 10 + rng.below(n - 10);
            z[at] = rng.u64() as u8;
        }
        _ => z.clear(),
    }
}

/// Structural damage: a file removed, emptied, replaced by a directory, or doubled under
/// another name.
fn structural(rng: &mut Rng, files: &mut Vec<(String, Node)>) {
    if files.is_empty() {
        return;
    }
    let i = rng.below(files.len());
    match rng.below(5) {
        0 => {
            files.remove(i);
        }
        1 => files[i].1 = Node::File(Vec::new()),
        2 => files[i].1 = Node::Dir,
        3 => {
            let (name, node) = files[i].clone();
            let other = match name.strip_suffix(".gz") {
                Some(base) => base.to_string(),
                None => format!("{name}.gz"),
            };
            files.push((other, node));
        }
        _ => {
            let name = rng.pick(&["data_batch_1.bin", "test.bin", "cifar-10-batches-bin/x"]);
            let k = rng.below(4000);
            files.push((name.to_string(), Node::File(rng.bytes(k))));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CIFAR.

const CIFAR10: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];
const CIFAR100: [&str; 2] = ["train.bin", "test.bin"];

/// A CIFAR-10 or CIFAR-100 directory (batches in it or in its `cifar-*` folder), valid or
/// near-valid: bad labels, sizes that are not a whole number of records, gzipped, missing
/// or empty batches, the other CIFAR's files beside them.
pub fn gen_cifar(rng: &mut Rng) -> DirInput {
    let hundred = rng.one_in(2);
    let (names, lb, sub): (&[&str], usize, &str) = if hundred {
        (&CIFAR100, 2, "cifar-100-binary/")
    } else {
        (&CIFAR10, 1, "cifar-10-batches-bin/")
    };
    let prefix = if rng.one_in(2) { sub } else { "" };
    let mut files = Vec::new();
    let mut records = 0u64;
    for name in names {
        let n = rng.range(1, 3);
        records += n as u64;
        let mut b = Vec::with_capacity(n * (lb + 3072));
        for _ in 0..n {
            if hundred {
                b.extend([rng.below(20) as u8, rng.below(100) as u8]);
            } else {
                b.push(rng.below(10) as u8);
            }
            b.extend(rng.bytes(3072));
        }
        files.push((format!("{prefix}{name}"), Node::File(b)));
    }
    let clean = rng.one_in(8);
    if !clean {
        for _ in 0..rng.range(1, 2) {
            let i = rng.below(files.len());
            let Node::File(b) = &mut files[i].1 else {
                continue;
            };
            match rng.below(6) {
                // A label byte of some record.
                0 | 1 if b.len() >= lb + 3072 => {
                    let r = rng.below(b.len() / (lb + 3072));
                    b[r * (lb + 3072) + rng.below(lb)] = rng.u64() as u8;
                }
                2 => *b = gz(b, rng),
                3 => {
                    let extra = *rng.pick(&[lb + 3072, 1, 3072]);
                    b.extend(rng.bytes(extra));
                }
                4 => mutate_bytes(rng, b, 3),
                _ => structural(rng, &mut files),
            }
        }
    }
    DirInput {
        files,
        limit: limit(rng, records * 3074),
    }
}
