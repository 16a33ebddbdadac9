/* Logging: four levels of message plus fatal. In the foreground, lines go
 * to stderr with a timestamp (one write per line, so concurrent readers of
 * the file see whole lines); detached, to syslog. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "pagerd.h"

static bool to_stderr = true;
static uint32_t verbosity = LOG_LEVEL_INFO;

void log_init(bool stderr_only)
{
    to_stderr = stderr_only;
    if (!to_stderr)
        openlog("hakmem-pagerd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_setlevel(uint32_t level)
{
    verbosity = level;
}

static void vlog(int prio, const char *fmt, va_list ap, int errnum)
{
    char msg[1024];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    if (errnum && (size_t)n < sizeof msg)
        snprintf(msg + n, sizeof msg - (size_t)n, ": %s", strerror(errnum));
    if (!to_stderr) {
        syslog(prio, "%s", msg);
        return;
    }
    char line[1100];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    int len = snprintf(line, sizeof line, "%04d-%02d-%02d %02d:%02d:%02d.%03ld %s\n", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, msg);
    if (len > 0) {
        if ((size_t)len >= sizeof line)
            len = sizeof line - 1;
        ssize_t w = write(STDERR_FILENO, line, (size_t)len);
        (void)w; /* nowhere to report a failed log write */
    }
}

void log_warn(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_WARNING, fmt, ap, saved);
    va_end(ap);
    errno = saved;
}

void log_warnx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_WARNING, fmt, ap, 0);
    va_end(ap);
}

void log_info(const char *fmt, ...)
{
    if (verbosity < LOG_LEVEL_INFO)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_INFO, fmt, ap, 0);
    va_end(ap);
}

void log_debug(const char *fmt, ...)
{
    if (verbosity < LOG_LEVEL_DEBUG)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_DEBUG, fmt, ap, 0);
    va_end(ap);
}

void fatal(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_CRIT, fmt, ap, saved);
    va_end(ap);
    exit(1);
}

void fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_CRIT, fmt, ap, 0);
    va_end(ap);
    exit(1);
}
