/* launch: run a command and write its resource usage to a file.
 *
 *   launch OUT_FILE [NAME=VALUE ...] PROGRAM [ARGS...]
 *
 * NAME=VALUE pairs are set in the command's environment only (as env(1)
 * does), so LD_PRELOAD applies to the command and not to launch itself.
 *
 * The harness starts every workload through this small program rather than
 * directly: Linux carries the peak RSS of the process image an exec
 * replaces into the new image's ru_maxrss, so a workload exec'd straight
 * from the (large) harness process would report at least the harness's
 * size. Here the workload is forked from a process of a few hundred KiB,
 * so the ru_maxrss that wait4 returns is the workload's own peak.
 *
 * OUT_FILE gets one line of key=value pairs: maxrss_kb, minflt, majflt,
 * utime_s, stime_s, nvcsw, nivcsw, and exit=N or signal=N. The exit
 * status of launch is the command's, or 128+N if signal N ended it.
 *
 * ru_maxrss leaves out pages of the huge page pool (hugetlbfs). With
 * HAKMEM_BENCH_HUGETLB set, launch reads the command's HugetlbPages every
 * 2 ms and adds hugetlb_peak_kb=N: the harness counts them into the peak. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

/* wait4, reading the command's pool pages meanwhile. */
static pid_t wait_sampling(pid_t pid, int *status, struct rusage *ru, long *peak)
{
    for (;;) {
        pid_t r = wait4(pid, status, WNOHANG, ru);
        if (r != 0)
            return r;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
        long kb = bench_hugetlb_kib_of(path);
        if (kb > *peak)
            *peak = kb;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: launch OUT_FILE [NAME=VALUE ...] PROGRAM [ARGS...]\n");
        return 2;
    }
    int prog = 2;
    while (prog < argc && strchr(argv[prog], '='))
        prog++;
    if (prog == argc) {
        fprintf(stderr, "launch: no program given\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 125;
    }
    if (pid == 0) {
        for (int i = 2; i < prog; i++)
            if (putenv(argv[i]) != 0) {
                perror("putenv");
                _exit(127);
            }
        execvp(argv[prog], &argv[prog]);
        fprintf(stderr, "launch: cannot run %s: %s\n", argv[prog], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    long huge_peak = -1;
    bool sample = getenv("HAKMEM_BENCH_HUGETLB") != NULL;
    if (sample)
        huge_peak = 0;
    while ((sample ? wait_sampling(pid, &status, &ru, &huge_peak) : wait4(pid, &status, 0, &ru)) < 0) {
        if (errno != EINTR) {
            perror("wait4");
            return 125;
        }
    }
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror(argv[1]);
        return 125;
    }
    fprintf(f, "maxrss_kb=%ld minflt=%ld majflt=%ld utime_s=%.3f stime_s=%.3f nvcsw=%ld nivcsw=%ld ",
            ru.ru_maxrss, ru.ru_minflt, ru.ru_majflt, (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6,
            (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6, ru.ru_nvcsw, ru.ru_nivcsw);
    if (huge_peak >= 0)
        fprintf(f, "hugetlb_peak_kb=%ld ", huge_peak);
    if (WIFSIGNALED(status))
        fprintf(f, "signal=%d\n", WTERMSIG(status));
    else
        fprintf(f, "exit=%d\n", WEXITSTATUS(status));
    if (fclose(f) != 0) {
        perror(argv[1]);
        return 125;
    }
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}
