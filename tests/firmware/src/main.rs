//! NeuroFlux on a Cortex-M4 with 128 KB of RAM (QEMU `mps2-an386`).
//!
//! No allocator: the training arena and the frozen-weight store are `static` buffers sized at
//! compile time by the planner (see `app.rs`); the epoch order is computed, not stored
//! (`order.rs`). The
//! images stay on the host and are read through Arm semihosting a few at a time. At the end the
//! firmware prints one `NFRESULT` line with the held-out accuracy of every head and the memory
//! it used, and exits QEMU with status 0 (1 on any failure).
//!
//! The data directory is the second word of the semihosting command line
//! (`-semihosting-config enable=on,target=native,arg=nf-firmware,arg=DIR`); without it,
//! `fixtures/fashion-mnist-mcu` relative to QEMU's working directory.
#![no_std]
#![no_main]

mod app;
mod config;
mod order;

use core::fmt::Write;
use core::ptr::addr_of_mut;

use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hio, nr, syscall, syscall1};

use app::{ARENA_FLOATS, STORE_LEN};

static mut ARENA: [f32; ARENA_FLOATS] = [0.0; ARENA_FLOATS];
static mut STORE: [u16; STORE_LEN] = [0; STORE_LEN];

/// The value cortex-m-rt's `paint-stack` feature fills the free RAM with before `main`.
const STACK_PAINT: u32 = 0xcccc_cccc;

extern "C" {
    static mut __sdata: u32;
    static mut __edata: u32;
    static mut __sbss: u32;
    static mut __ebss: u32;
    static mut _stack_end: u32;
    static mut _stack_start: u32;
    static __sidata: u32;
}

fn addr(p: *const u32) -> usize {
    p as usize
}

/// Semihosting: host files, the host console and the host clock.
struct Semihosting {
    out: Option<hio::HostStream>,
}

impl app::Host for Semihosting {
    type File = usize;

    fn open(&mut self, path: &[u8]) -> Option<usize> {
        debug_assert_eq!(path.last(), Some(&0));
        // SYS_OPEN: NUL-terminated name, mode ("rb" = 1), length without the NUL.
        let fd = unsafe { syscall!(OPEN, path.as_ptr(), 1usize, path.len() - 1) } as isize;
        (fd >= 0).then_some(fd as usize)
    }

    fn read_at(&mut self, f: usize, offset: u32, buf: &mut [u8]) -> bool {
        // SYS_SEEK returns 0 on success; SYS_READ returns the number of bytes *not* read.
        unsafe {
            syscall!(SEEK, f, offset as usize) == 0
                && syscall!(READ, f, buf.as_mut_ptr(), buf.len()) == 0
        }
    }

    fn print(&mut self, args: core::fmt::Arguments) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.write_fmt(args);
            let _ = out.write_str("\n");
        }
    }

    fn centis(&mut self) -> u32 {
        // SYS_ELAPSED (host wall-clock ticks since start, 64 bits) over SYS_TICKFREQ; SYS_CLOCK
        // would count QEMU's CPU time, not wall time.
        let mut ticks = [0usize; 2];
        let freq = unsafe { syscall!(TICKFREQ) } as isize;
        if freq <= 0 || unsafe { syscall1(nr::ELAPSED, ticks.as_mut_ptr() as usize) } != 0 {
            return unsafe { syscall!(CLOCK) as u32 };
        }
        let t = (ticks[0] as u64) | ((ticks[1] as u64) << 32);
        (t / (freq as u64 / 100).max(1)) as u32
    }
}

/// The data directory from the semihosting command line (its second word), into `buf`.
fn data_dir(buf: &mut [u8; 256]) -> &[u8] {
    const DEFAULT: &[u8] = b"fixtures/fashion-mnist-mcu";
    // SYS_GET_CMDLINE takes a block {buffer, length} and rewrites the length.
    let mut block = [buf.as_mut_ptr() as usize, buf.len() - 1];
    let ok = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) } == 0;
    let len = if ok { block[1].min(buf.len()) } else { 0 };
    let line = &buf[..len];
    let mut words = line
        .split(|&c| c == b' ' || c == 0)
        .filter(|w| !w.is_empty());
    let _program = words.next();
    match words.next() {
        Some(dir) => {
            let (s, n) = (dir.as_ptr() as usize - buf.as_ptr() as usize, dir.len());
            &buf[s..s + n]
        }
        None => DEFAULT,
    }
}

/// Bytes of the painted stack area that were overwritten: the stack's high-water mark.
fn stack_high_water() -> usize {
    let lo = addr(addr_of_mut!(_stack_end));
    let hi = addr(addr_of_mut!(_stack_start));
    let mut p = lo;
    while p < hi && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT {
        p += 4;
    }
    hi - p
}

fn fpu_enabled() -> bool {
    // CPACR: CP10 and CP11 full access (bits 20..24).
    let cpacr = unsafe { core::ptr::read_volatile(0xE000_ED88 as *const u32) };
    (cpacr >> 20) & 0xf == 0xf
}

#[entry]
fn main() -> ! {
    let mut h = Semihosting {
        out: hio::hstdout().ok(),
    };
    let code = run(&mut h);
    debug::exit(if code {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

fn run(h: &mut Semihosting) -> bool {
    use app::Host;
    let data = addr(addr_of_mut!(__edata)) - addr(addr_of_mut!(__sdata));
    let bss = addr(addr_of_mut!(__ebss)) - addr(addr_of_mut!(__sbss));
    let flash = addr(core::ptr::addr_of!(__sidata)) + data;
    let ram = addr(addr_of_mut!(_stack_start)) - 0x2000_0000;
    h.print(format_args!(
        "nf-firmware: Cortex-M4, FPU {}, RAM {} B (.data {} B, .bss {} B, stack room {} B), flash {} B",
        if fpu_enabled() { "on" } else { "OFF" },
        ram,
        data,
        bss,
        ram - data - bss,
        flash
    ));
    if !fpu_enabled() {
        h.print(format_args!("error: the FPU is not enabled"));
        return false;
    }
    app::print_plan(h);
    let mut dir_buf = [0u8; 256];
    let dir = data_dir(&mut dir_buf);
    h.print(format_args!(
        "data: {}",
        core::str::from_utf8(dir).unwrap_or("?")
    ));
    // SAFETY: `main` runs once and nothing else touches these statics; each is borrowed
    // exactly once, here.
    let mem = unsafe {
        app::Memory {
            arena: &mut *addr_of_mut!(ARENA),
            store: &mut *addr_of_mut!(STORE),
        }
    };
    let t0 = h.centis();
    let outcome = match app::run(h, mem, dir) {
        Ok(o) => o,
        Err(e) => {
            h.print(format_args!("error: {e}"));
            return false;
        }
    };
    let t = h.centis().wrapping_sub(t0);
    let hwm = stack_high_water();
    let mut line: heapless::String<512> = heapless::String::new();
    let _ = app::result_line(&mut line, &outcome);
    let _ = write!(
        line,
        " stack={} data={} bss={} ram={} flash={} seconds={}.{:02}",
        hwm,
        data,
        bss,
        ram,
        flash,
        t / 100,
        t % 100
    );
    h.print(format_args!("{}", line.as_str()));
    let room = ram - data - bss;
    if hwm >= room {
        h.print(format_args!("error: the stack overflowed into .bss"));
        return false;
    }
    if hwm as u64 > app::STACK_RESERVE {
        h.print(format_args!(
            "error: stack high-water mark {hwm} B exceeds the reserve {} B",
            app::STACK_RESERVE
        ));
        return false;
    }
    true
}

/// A fault (bus error, stack overflow past RAM, bad instruction): report it and exit.
#[exception]
unsafe fn HardFault(ef: &cortex_m_rt::ExceptionFrame) -> ! {
    if let Ok(mut out) = hio::hstdout() {
        let _ = writeln!(
            out,
            "NFPANIC hard fault at pc {:#010x}, lr {:#010x}",
            ef.pc(),
            ef.lr()
        );
    }
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if let Ok(mut out) = hio::hstdout() {
        let _ = writeln!(out, "NFPANIC {info}");
    }
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
