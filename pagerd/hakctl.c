/* hakctl: the command line. Commands `status` and `metrics`; the socket is
 * --socket, else $HAKMEM_PAGERD_SOCKET (the variable clients read), else
 * the default path. Every failure is one line on stderr naming the socket
 * (or the output file) and the reason, and an exit code of enum
 * hakctl_exit. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hakctl.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hakctl [--socket PATH] [--json] [--output FILE] status\n"
            "       hakctl [--socket PATH] [--output FILE] metrics\n"
            "       hakctl --help | --version\n"
            "\n"
            "  status         the daemon's version and uptime, its per-node pools and its clients\n"
            "  metrics        the same in the Prometheus text format\n"
            "  --socket PATH  the daemon's socket (default: $HAKMEM_PAGERD_SOCKET, else %s)\n"
            "  --json         one JSON object instead of tables\n"
            "  --output FILE  write FILE (mode 0644) whole or not at all, instead of standard output\n"
            "\n"
            "exit status: 0 ok, 1 daemon unreachable or silent, 2 usage, 3 invalid reply, 4 refused (rate limit),\n"
            "             5 --output FILE not written\n",
            HAK_SHM_DEFAULT_SOCKET);
}

static const char *default_socket(void)
{
    const char *env = getenv("HAKMEM_PAGERD_SOCKET");
    return env && *env ? env : HAK_SHM_DEFAULT_SOCKET;
}

static int bad_usage(const char *fmt, const char *arg)
{
    fputs("hakctl: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (hakctl --help)\n", stderr);
    return HAKCTL_USAGE;
}

enum format { FMT_TEXT, FMT_JSON, FMT_METRICS };

static void print(FILE *f, enum format fmt, const struct snapshot *snap)
{
    if (fmt == FMT_JSON)
        print_json(f, snap);
    else if (fmt == FMT_METRICS)
        print_metrics(f, snap);
    else
        print_text(f, snap);
}

/* FILE.tmp written and renamed over FILE: a reader (node_exporter's
 * textfile collector) sees the old file or the new one, never half. */
static int write_atomically(const char *path, enum format fmt, const struct snapshot *snap)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fprintf(stderr, "hakctl: %s: path too long\n", path);
        return HAKCTL_USAGE;
    }
    FILE *f = fopen(tmp, "we");
    if (!f) {
        fprintf(stderr, "hakctl: %s: %s\n", tmp, strerror(errno));
        return HAKCTL_OUTPUT;
    }
    print(f, fmt, snap);
    bool ok = fflush(f) == 0 && fchmod(fileno(f), 0644) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "hakctl: %s: %s\n", ok ? path : tmp, strerror(errno));
        unlink(tmp);
        return HAKCTL_OUTPUT;
    }
    return HAKCTL_OK;
}

static int run(const char *socket, enum format fmt, const char *output)
{
    static struct snapshot snap;
    char err[256];
    enum hakctl_exit r = query_status(socket, &snap, err, sizeof err);
    if (r != HAKCTL_OK) {
        fprintf(stderr, "hakctl: %s: %s\n", socket, err);
        return r;
    }
    if (output)
        return write_atomically(output, fmt, &snap);
    print(stdout, fmt, &snap);
    return HAKCTL_OK;
}

int main(int argc, char **argv)
{
    enum { OPT_SOCKET = 256, OPT_JSON, OPT_OUTPUT, OPT_HELP, OPT_VERSION };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, OPT_SOCKET}, {"json", no_argument, NULL, OPT_JSON},
        {"output", required_argument, NULL, OPT_OUTPUT}, {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},     {NULL, 0, NULL, 0},
    };
    const char *socket = default_socket(), *output = NULL;
    bool json = false;
    int ch;
    opterr = 0; /* our own one-line message */
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case OPT_SOCKET:
            socket = optarg;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_OUTPUT:
            output = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            return HAKCTL_OK;
        case OPT_VERSION:
            printf("hakctl %s\n", HAKCTL_VERSION);
            return HAKCTL_OK;
        default:
            return bad_usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind == argc)
        return bad_usage("%s", "no command given");
    bool metrics = strcmp(argv[optind], "metrics") == 0;
    if (!metrics && strcmp(argv[optind], "status") != 0)
        return bad_usage("unknown command '%s'", argv[optind]);
    if (metrics && json)
        return bad_usage("%s", "--json is for status; metrics are Prometheus text");
    if (output && !*output)
        return bad_usage("%s", "--output: empty path");
    if (optind + 1 != argc)
        return bad_usage("unexpected argument '%s'", argv[optind + 1]);
    if (*socket == 0 || strlen(socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return bad_usage("--socket '%s': empty or too long for a Unix socket", socket);
    return run(socket, metrics ? FMT_METRICS : json ? FMT_JSON : FMT_TEXT, output);
}
