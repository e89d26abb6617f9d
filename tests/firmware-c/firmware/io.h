/* The firmware's output and file access over Arm semihosting, without newlib's stdio: no heap,
 * no FILE buffers, a few hundred bytes of code. */
#ifndef NF_FIRMWARE_IO_H
#define NF_FIRMWARE_IO_H
#include <stddef.h>
#include <stdint.h>

/* A printf for what the firmware prints: %s %c %d %u %x %%, the length modifiers l and ll
 * (so %llu, %lu), %.Nf for floats and doubles (N 0..9; nan, inf), widths like %02u
 * (zero-padded or space-padded). Output goes to the host's console (SYS_WRITE0), a line at a
 * time. Returns nothing: the console cannot fail in a way the firmware could act on. */
void fw_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Format into buf (len bytes, NUL-terminated, truncated); the length written. */
size_t fw_snprintf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A host file opened for reading (SYS_OPEN "rb"): its handle, or -1. */
int fw_open(const char *path);
/* Read len bytes at offset pos of file h (SYS_SEEK then SYS_READ): 0 when all were read. */
int fw_read_at(int h, uint32_t pos, void *buf, uint32_t len);
#endif
