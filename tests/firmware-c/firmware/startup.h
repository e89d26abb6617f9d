/* What startup.c gives the firmware: semihosting beyond newlib, memory figures, exit. */
#ifndef NF_FIRMWARE_STARTUP_H
#define NF_FIRMWARE_STARTUP_H
#include <stddef.h>
#include <stdint.h>

/* The value the reset handler paints the free stack with. */
#define STACK_PAINT 0xCCCCCCCCu

uintptr_t semihost(uintptr_t op, uintptr_t arg);
/* Exit QEMU: status 0 when ok, 1 otherwise. */
__attribute__((noreturn)) void fw_exit(int ok);
/* Bytes of the stack ever used (the painted words overwritten). */
size_t fw_stack_high_water(void);
/* Paint the free stack below the caller's frame again: fw_stack_high_water then measures
 * from here on (at most the caller's depth plus what is used after). */
void fw_stack_repaint(void);
/* Bytes newlib took from the heap. */
size_t fw_heap_used(void);
/* The semihosting command line into buf (NUL-terminated); its length. */
size_t fw_command_line(char *buf, size_t len);
/* Host wall clock in centiseconds. */
uint32_t fw_centis(void);
uint32_t fw_cpacr(void);
size_t fw_data_bytes(void);
size_t fw_bss_bytes(void);
size_t fw_heap_bytes(void);
size_t fw_stack_bytes(void);
size_t fw_ram_bytes(void);
size_t fw_flash_bytes(void);
#endif
