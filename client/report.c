/* Diagnostics written with write(2) only: they run when the heap may be
 * corrupt or in the middle of an allocation, so they must not allocate. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void hak_write_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

char *hak_fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        *buf++ = tmp[--n];
    *buf = 0;
    return buf;
}

char *hak_fmt_hex(char *buf, uintptr_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    int n = 0;
    do
        tmp[n++] = digits[v & 15];
    while ((v >>= 4) != 0);
    *buf++ = '0';
    *buf++ = 'x';
    while (n)
        *buf++ = tmp[--n];
    *buf = 0;
    return buf;
}

char *hak_append(char *dst, char *end, const char *s)
{
    while (*s && dst < end)
        *dst++ = *s++;
    *dst = 0;
    return dst;
}

void hak_fatal_pointer(const char *api, const void *p, const char *why)
{
    char line[256], num[24], *e = line + sizeof line - 2;
    char *q = hak_append(line, e, "hakmem: ");
    q = hak_append(q, e, api);
    q = hak_append(q, e, "(");
    hak_fmt_hex(num, (uintptr_t)p);
    q = hak_append(q, e, num);
    q = hak_append(q, e, "): ");
    q = hak_append(q, e, why);
    q = hak_append(q, e, "\n");
    hak_write_str(2, line);
    abort();
}

void hak_fatal(const char *msg)
{
    hak_write_str(2, "hakmem: fatal: ");
    hak_write_str(2, msg);
    hak_write_str(2, "\n");
    abort();
}

void hak_warn(const char *msg)
{
    hak_write_str(2, "hakmem: warning: ");
    hak_write_str(2, msg);
    hak_write_str(2, "\n");
}

#ifdef HAK_DEBUG
void hak_assert_fail(const char *expr, const char *file, int line)
{
    char num[24];
    hak_fmt_u64(num, (uint64_t)line);
    hak_write_str(2, "hakmem: assertion failed: ");
    hak_write_str(2, expr);
    hak_write_str(2, " at ");
    hak_write_str(2, file);
    hak_write_str(2, ":");
    hak_write_str(2, num);
    hak_write_str(2, "\n");
    abort();
}
#endif
