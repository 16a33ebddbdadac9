/* misuse: one heap misuse, then the allocation a program would go on with.
 *
 *   misuse CASE SIZE     (misuse --list names the cases)
 *
 * Three blocks of SIZE bytes a, b, c are allocated, one misuse is done,
 * then 2,000 more blocks of SIZE are allocated (an allocator that checks a
 * block when it hands it out again reports there). Exit 0 means the misuse
 * went unnoticed; a signal means the allocator stopped the program.
 * bench/misuse.py runs every case under every allocator. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

/* The misuses are the point: the compiler is told not to warn of them. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

static void *volatile sink; /* keeps the compiler from dropping a malloc/free pair */

static void *free_it(void *p)
{
    free(p);
    return NULL;
}

static void free_in_thread(void *p)
{
    pthread_t th;
    if (pthread_create(&th, NULL, free_it, p) == 0)
        pthread_join(th, NULL);
}

static const char *const cases[] = {
    "double-free-at-once",      /* free(b); free(b) */
    "double-free-later",        /* free(b); free(c); free(b) */
    "double-free-owner-thread", /* free(b), then another thread frees b */
    "double-free-thread-owner", /* another thread frees b, then free(b) */
    "free-next-unused",         /* free(c + size): no block handed out there */
    "free-next-free",           /* free(b); free(c); free(a + size) */
    "zero-after-free",          /* free(b); memset(b, 0, size) */
    "write-after-free",         /* free(b); memset(b, 'A', size) */
    "realloc-after-free",       /* free(b); realloc(b, smaller) */
    "realloc-grow-after-free",  /* free(b); realloc(b, 4 * size) */
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--list")) {
        for (int i = 0; i < NCASES; i++)
            puts(cases[i]);
        return 0;
    }
    int c = -1;
    for (int i = 0; argc == 3 && i < NCASES; i++)
        if (!strcmp(argv[1], cases[i]))
            c = i;
    size_t n = argc == 3 ? strtoul(argv[2], NULL, 10) : 0;
    if (c < 0 || !n) {
        fprintf(stderr, "usage: misuse CASE SIZE (misuse --list names the cases)\n");
        return 2;
    }
    char *a = malloc(n), *b = malloc(n), *d = malloc(n);
    sink = a;
    sink = b;
    sink = d;
    switch (c) {
    case 0: free(b); free(b); break;
    case 1: free(b); free(d); free(b); break;
    case 2: free(b); free_in_thread(b); break;
    case 3: free_in_thread(b); free(b); break;
    case 4: free(d + malloc_usable_size(d)); break;
    case 5: free(b); free(d); free(a + malloc_usable_size(a)); break;
    case 6: free(b); memset(b, 0, n); break;
    case 7: free(b); memset(b, 'A', n); break;
    case 8: free(b); sink = realloc(b, n / 2 + 1); break;
    case 9: free(b); sink = realloc(b, n * 4); break;
    }
    for (int i = 0; i < 2000; i++)
        sink = malloc(n);
    return 0;
}
