/* See io.h. */
#include "io.h"

#include <stdarg.h>
#include <string.h>

#include "startup.h"

typedef struct {
    char *buf;
    size_t len, at;
    int console; /* flush to the console when full (else truncate) */
} sink;

static void flush(sink *s) {
    if (!s->console || s->at == 0) return;
    s->buf[s->at] = 0;
    semihost(0x04, (uintptr_t)s->buf); /* SYS_WRITE0 */
    s->at = 0;
}

static void put(sink *s, char c) {
    if (s->at + 1 >= s->len) {
        if (!s->console) return;
        flush(s);
    }
    s->buf[s->at++] = c;
}

static void put_str(sink *s, const char *p) {
    while (*p) put(s, *p++);
}

/* v in base 10 or 16, at least width digits (padded with pad). */
static void put_uint(sink *s, unsigned long long v, unsigned base, unsigned width, char pad) {
    char d[24];
    unsigned n = 0;
    do {
        unsigned x = (unsigned)(v % base);
        d[n++] = (char)(x < 10 ? '0' + x : 'a' + x - 10);
        v /= base;
    } while (v);
    while (width > n) {
        put(s, pad);
        width--;
    }
    while (n) put(s, d[--n]);
}

/* x with prec decimals, rounded half away from zero. */
static void put_fixed(sink *s, double x, unsigned prec) {
    if (x != x) {
        put_str(s, "nan");
        return;
    }
    if (x < 0) {
        put(s, '-');
        x = -x;
    }
    if (x > 1e18) {
        put_str(s, "inf");
        return;
    }
    unsigned long long scale = 1;
    for (unsigned i = 0; i < prec; i++) scale *= 10;
    unsigned long long v = (unsigned long long)(x * (double)scale + 0.5);
    put_uint(s, v / scale, 10, 0, '0');
    if (prec) {
        put(s, '.');
        put_uint(s, v % scale, 10, prec, '0');
    }
}

static void format(sink *s, const char *f, va_list ap) {
    for (; *f; f++) {
        if (*f != '%') {
            put(s, *f);
            continue;
        }
        f++;
        char pad = ' ';
        unsigned width = 0, prec = 6, lng = 0;
        if (*f == '0') {
            pad = '0';
            f++;
        }
        while (*f >= '0' && *f <= '9') width = width * 10 + (unsigned)(*f++ - '0');
        if (*f == '.') {
            prec = 0;
            f++;
            while (*f >= '0' && *f <= '9') prec = prec * 10 + (unsigned)(*f++ - '0');
            if (prec > 9) prec = 9;
        }
        while (*f == 'l') {
            lng++;
            f++;
        }
        switch (*f) {
        case 'd': {
            long long v = lng >= 2 ? va_arg(ap, long long) : lng ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long long m = (unsigned long long)v;
            if (v < 0) {
                put(s, '-');
                m = 0 - m;
            }
            put_uint(s, m, 10, width, pad);
            break;
        }
        case 'u':
        case 'x': {
            unsigned long long v = lng >= 2 ? va_arg(ap, unsigned long long)
                                   : lng ? va_arg(ap, unsigned long)
                                         : va_arg(ap, unsigned);
            put_uint(s, v, *f == 'x' ? 16 : 10, width, pad);
            break;
        }
        case 'f':
            put_fixed(s, va_arg(ap, double), prec);
            break;
        case 's': {
            const char *p = va_arg(ap, const char *);
            put_str(s, p ? p : "(null)");
            break;
        }
        case 'c':
            put(s, (char)va_arg(ap, int));
            break;
        case '%':
            put(s, '%');
            break;
        default: /* not supported: show it */
            put(s, '%');
            if (!*f) return;
            put(s, *f);
        }
    }
}

void fw_printf(const char *fmt, ...) {
    static char buf[128]; /* not on the stack: the read callback prints from deep in training */
    sink s = {buf, sizeof buf, 0, 1};
    va_list ap;
    va_start(ap, fmt);
    format(&s, fmt, ap);
    va_end(ap);
    flush(&s);
}

size_t fw_snprintf(char *buf, size_t len, const char *fmt, ...) {
    if (len == 0) return 0;
    sink s = {buf, len, 0, 0};
    va_list ap;
    va_start(ap, fmt);
    format(&s, fmt, ap);
    va_end(ap);
    buf[s.at] = 0;
    return s.at;
}

int fw_open(const char *path) {
    uintptr_t block[3] = {(uintptr_t)path, 1 /* "rb" */, strlen(path)};
    return (int)semihost(0x01, (uintptr_t)block); /* SYS_OPEN */
}

int fw_read_at(int h, uint32_t pos, void *buf, uint32_t len) {
    uintptr_t seek[2] = {(uintptr_t)h, pos};
    if (semihost(0x0A, (uintptr_t)seek) != 0) return 1; /* SYS_SEEK */
    uintptr_t rd[3] = {(uintptr_t)h, (uintptr_t)buf, len};
    return semihost(0x06, (uintptr_t)rd) != 0; /* SYS_READ: the bytes not read */
}
