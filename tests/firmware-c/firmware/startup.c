/* Start-up of the C firmware on a Cortex-M4F (QEMU mps2-an386): the vector table, the reset
 * handler (FPU on, .data copied, .bss zeroed, the stack painted so that its high-water mark can
 * be measured), a fault handler, newlib's _sbrk over the linker's fixed heap, and the Arm
 * semihosting calls the firmware needs beyond newlib's (command line, clock, exit). */
#include <stddef.h>
#include <stdint.h>

#include "startup.h"

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end;
extern uint32_t __heap_start, __heap_end, __stack_top, __stack_limit;

int main(void);
void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);

/* Only the vectors up to SysTick: nothing here enables an interrupt. */
__attribute__((section(".vectors"), used)) static const void *const vectors[16] = {
    &__stack_top,      Reset_Handler,   Default_Handler, HardFault_Handler,
    Default_Handler,   Default_Handler, Default_Handler, 0,
    0,                 0,               0,               Default_Handler,
    Default_Handler,   0,               Default_Handler, Default_Handler,
};

/* Semihosting: r0 = operation, r1 = argument; result in r0. */
uintptr_t semihost(uintptr_t op, uintptr_t arg) {
    register uintptr_t r0 __asm__("r0") = op;
    register uintptr_t r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void fw_exit(int ok) {
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (QEMU exits 0) or RunTimeErrorUnknown (1). */
    semihost(0x18, ok ? 0x20026 : 0x20023);
    for (;;) {
    }
}

static void write0(const char *s) { semihost(0x04, (uintptr_t)s); }

void Default_Handler(void) {
    write0("NFPANIC unexpected exception\n");
    fw_exit(0);
}

void HardFault_Handler(void) {
    write0("NFPANIC hard fault\n");
    fw_exit(0);
}

/* The Rust library's panic handler calls abort (it never should: see the library's docs). */
void abort(void) {
    write0("NFPANIC abort\n");
    fw_exit(0);
}

__attribute__((noreturn)) void Reset_Handler(void) {
    /* CP10 and CP11 full access (the FPU), before any floating-point instruction. */
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    volatile uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) *dst++ = *src++;
    for (volatile uint32_t *p = &__bss_start; p < &__bss_end; p++) *p = 0;
    /* Paint the stack region below the current frame. */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = &__stack_limit; p < sp - 16; p++) *p = STACK_PAINT;
    fw_exit(main() == 0);
    for (;;) {
    }
}

void fw_stack_repaint(void) {
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = &__stack_limit; p < sp - 16; p++) *p = STACK_PAINT;
}

size_t fw_stack_high_water(void) {
    const uint32_t *p = &__stack_limit;
    while (p < &__stack_top && *p == STACK_PAINT) p++;
    return (size_t)((const char *)&__stack_top - (const char *)p);
}

static char *heap_next;

/* newlib's allocator asks for memory here: inside the linker's heap, never beyond. */
void *_sbrk(ptrdiff_t incr) {
    if (!heap_next) heap_next = (char *)&__heap_start;
    if (incr < 0 || (size_t)incr > (size_t)((char *)&__heap_end - heap_next)) return (void *)-1;
    char *prev = heap_next;
    heap_next += incr;
    return prev;
}

size_t fw_heap_used(void) {
    return heap_next ? (size_t)(heap_next - (char *)&__heap_start) : 0;
}

size_t fw_command_line(char *buf, size_t len) {
    /* SYS_GET_CMDLINE takes {buffer, length} and rewrites the length. */
    uintptr_t block[2] = {(uintptr_t)buf, len - 1};
    if (len == 0 || semihost(0x15, (uintptr_t)block) != 0) return 0;
    size_t n = block[1] < len ? block[1] : len - 1;
    buf[n] = 0;
    return n;
}

uint32_t fw_centis(void) {
    /* SYS_ELAPSED (64-bit ticks) over SYS_TICKFREQ: host wall time, not QEMU's CPU time. */
    uint32_t ticks[2];
    intptr_t freq = (intptr_t)semihost(0x31, 0);
    if (freq <= 0 || semihost(0x30, (uintptr_t)ticks) != 0) return (uint32_t)semihost(0x10, 0);
    uint64_t t = (uint64_t)ticks[0] | ((uint64_t)ticks[1] << 32);
    uint64_t per = (uint64_t)freq / 100u;
    return (uint32_t)(t / (per ? per : 1u));
}

uint32_t fw_cpacr(void) { return *(volatile uint32_t *)0xE000ED88u; }

size_t fw_data_bytes(void) { return (size_t)((char *)&__data_end - (char *)&__data_start); }
size_t fw_bss_bytes(void) { return (size_t)((char *)&__bss_end - (char *)&__bss_start); }
size_t fw_heap_bytes(void) { return (size_t)((char *)&__heap_end - (char *)&__heap_start); }
size_t fw_stack_bytes(void) { return (size_t)((char *)&__stack_top - (char *)&__stack_limit); }
size_t fw_ram_bytes(void) { return (size_t)((char *)&__stack_top - (char *)0x20000000); }
size_t fw_flash_bytes(void) {
    extern uint32_t __flash_end;
    return (size_t)(uintptr_t)&__flash_end;
}
