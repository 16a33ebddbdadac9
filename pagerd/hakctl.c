/* hakctl: the command line. One command today, `status`; the socket is
 * --socket, else $HAKMEM_PAGERD_SOCKET (the variable clients read), else
 * the default path. Every failure is one line on stderr naming the socket
 * and the reason, and an exit code of enum hakctl_exit. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "hakctl.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hakctl [--socket PATH] [--json] status\n"
            "       hakctl --help | --version\n"
            "\n"
            "  status         the daemon's version and uptime, its per-node pools and its clients\n"
            "  --socket PATH  the daemon's socket (default: $HAKMEM_PAGERD_SOCKET, else %s)\n"
            "  --json         one JSON object instead of tables\n"
            "\n"
            "exit status: 0 ok, 1 daemon unreachable or silent, 2 usage, 3 invalid reply, 4 refused (rate limit)\n",
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

static int status(const char *socket, bool json)
{
    static struct snapshot snap;
    char err[256];
    enum hakctl_exit r = query_status(socket, &snap, err, sizeof err);
    if (r != HAKCTL_OK) {
        fprintf(stderr, "hakctl: %s: %s\n", socket, err);
        return r;
    }
    if (json)
        print_json(stdout, &snap);
    else
        print_text(stdout, &snap);
    return HAKCTL_OK;
}

int main(int argc, char **argv)
{
    enum { OPT_SOCKET = 256, OPT_JSON, OPT_HELP, OPT_VERSION };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, OPT_SOCKET}, {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},           {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    const char *socket = default_socket();
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
    if (strcmp(argv[optind], "status") != 0)
        return bad_usage("unknown command '%s'", argv[optind]);
    if (optind + 1 != argc)
        return bad_usage("unexpected argument '%s'", argv[optind + 1]);
    if (*socket == 0 || strlen(socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return bad_usage("--socket '%s': empty or too long for a Unix socket", socket);
    return status(socket, json);
}
