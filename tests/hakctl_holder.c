/* For test_hakctl.sh: a client that takes SuperSlabs and then holds still.
 * It allocates COUNT blocks of 192 KiB (mid-size blocks carved from
 * SuperSlabs), one per millisecond so that the daemon's refills keep up,
 * prints "ready", and then makes no allocation at all until its stdin
 * closes: a status taken meanwhile sees every SuperSlab it will ever pop.
 * Run under LD_PRELOAD=libhakclient.so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (192u << 10)

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 200;
    void **blocks = calloc((size_t)count, sizeof *blocks);
    if (!blocks)
        return 1;
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < count; i++) {
        if (!(blocks[i] = malloc(BLOCK)))
            return 1;
        memset(blocks[i], i, BLOCK);
        nanosleep(&ms, NULL);
    }
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    for (int i = 0; i < count; i++)
        free(blocks[i]);
    free(blocks);
    return 0;
}
