/* The daemon's reading of memory cgroups (pagerd/cgroup.c): which cgroup a
 * process is in, where its hierarchy is mounted, and the room left along
 * its path, for cgroup v1 and v2. The text parsers get real-world lines;
 * the room is read from trees laid out like each version's filesystem;
 * and the real hierarchy of this machine is read where one is mounted. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pagerd.h"

#define MIB (1024ull * 1024)

static void test_proc_cgroup_v1_memory_line(void **state)
{
    (void)state;
    const char *text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/1c5c\n3:cpu,cpuacct:/x\n0::/\n";
    int v = 0;
    char path[256];
    assert_true(cg_parse_proc(text, &v, path, sizeof path));
    assert_int_equal(v, 1);
    assert_string_equal(path, "/process_api/1c5c");
    /* The controller may share its hierarchy with others. */
    assert_true(cg_parse_proc("5:cpu,memory,pids:/a/b\n", &v, path, sizeof path));
    assert_string_equal(path, "/a/b");
}

static void test_proc_cgroup_v2_only(void **state)
{
    (void)state;
    int v = 0;
    char path[256];
    assert_true(cg_parse_proc("0::/system.slice/redis.service\n", &v, path, sizeof path));
    assert_int_equal(v, 2);
    assert_string_equal(path, "/system.slice/redis.service");
    /* Hybrid: v1 memory wins over the unified line. */
    assert_true(cg_parse_proc("0::/u\n7:memory:/m\n", &v, path, sizeof path));
    assert_int_equal(v, 1);
    assert_string_equal(path, "/m");
}

static void test_proc_cgroup_rejects_nonsense(void **state)
{
    (void)state;
    int v = 0;
    char path[8];
    assert_false(cg_parse_proc("", &v, path, sizeof path));
    assert_false(cg_parse_proc("garbage\n", &v, path, sizeof path));
    assert_false(cg_parse_proc("4:memory:relative\n", &v, path, sizeof path));
    assert_false(cg_parse_proc("0::/a/path/longer/than/eight\n", &v, path, sizeof path));
    assert_false(cg_parse_proc("4:memoryx:/a\n", &v, path, sizeof path));
}

static void test_mountinfo_lines(void **state)
{
    (void)state;
    char mnt[256], root[256];
    const char *v1 = "37 28 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory\n";
    const char *v1cpu = "36 28 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:14 - cgroup cgroup rw,cpu\n";
    const char *v2 = "30 24 0:26 /docker/abc /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const char *ext4 = "24 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n";
    assert_true(cg_parse_mount(v1, 1, mnt, sizeof mnt, root, sizeof root));
    assert_string_equal(mnt, "/sys/fs/cgroup/memory");
    assert_string_equal(root, "/");
    assert_false(cg_parse_mount(v1cpu, 1, mnt, sizeof mnt, root, sizeof root));
    assert_false(cg_parse_mount(v1, 2, mnt, sizeof mnt, root, sizeof root));
    assert_true(cg_parse_mount(v2, 2, mnt, sizeof mnt, root, sizeof root));
    assert_string_equal(mnt, "/sys/fs/cgroup");
    assert_string_equal(root, "/docker/abc");
    assert_false(cg_parse_mount(ext4, 2, mnt, sizeof mnt, root, sizeof root));
    assert_false(cg_parse_mount("no separator here\n", 2, mnt, sizeof mnt, root, sizeof root));
}

static void test_directory_of_a_path(void **state)
{
    (void)state;
    char dir[256];
    assert_true(cg_dir_of("/sys/fs/cgroup/memory", "/", "/a/b", dir, sizeof dir));
    assert_string_equal(dir, "/sys/fs/cgroup/memory/a/b");
    assert_true(cg_dir_of("/sys/fs/cgroup", "/", "/", dir, sizeof dir));
    assert_string_equal(dir, "/sys/fs/cgroup");
    /* A mount that shows /docker/abc at its top (inside a container). */
    assert_true(cg_dir_of("/sys/fs/cgroup", "/docker/abc", "/docker/abc/sub", dir, sizeof dir));
    assert_string_equal(dir, "/sys/fs/cgroup/sub");
    assert_false(cg_dir_of("/sys/fs/cgroup", "/docker/abc", "/docker/abcdef", dir, sizeof dir));
    assert_false(cg_dir_of("/sys/fs/cgroup", "/docker/abc", "/other", dir, sizeof dir));
    assert_false(cg_dir_of("/sys/fs/cgroup", "/", "/a/../../etc", dir, sizeof dir));
}

/* ---- trees laid out like a cgroup filesystem ---- */

static char tree[64];

static void put(const char *rel, const char *name, const char *value)
{
    char path[512];
    snprintf(path, sizeof path, "%s%s", tree, rel);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s%s/%s", tree, rel, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(value, f);
    fclose(f);
}

static int tree_make(void **state)
{
    (void)state;
    snprintf(tree, sizeof tree, "/tmp/hakcg-XXXXXX");
    return mkdtemp(tree) ? 0 : -1;
}

static int tree_remove(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tree);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_room_v2_tree(void **state)
{
    (void)state;
    /* The root has no memory.max (as in v2); a parent limit of 1 GiB with
     * 900 MiB used binds before the child's own 512 MiB with 100 used. */
    put("", "memory.current", "123456789\n");
    put("/slice", "memory.max", "1073741824\n");
    put("/slice", "memory.current", "943718400\n");
    put("/slice/app", "memory.max", "536870912\n");
    put("/slice/app", "memory.current", "104857600\n");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/slice/app", tree);
    uint64_t room, limit, usage;
    assert_true(cg_read_room(dir, tree, 2, &room, &limit, &usage));
    assert_int_equal(limit, 512 * MIB);
    assert_int_equal(usage, 100 * MIB);
    assert_int_equal(room, 124 * MIB);
    /* "max" everywhere: no limit. */
    put("/slice", "memory.max", "max\n");
    put("/slice/app", "memory.max", "max\n");
    assert_true(cg_read_room(dir, tree, 2, &room, &limit, &usage));
    assert_true(room == UINT64_MAX && limit == UINT64_MAX);
    /* Over its limit: no room, not a wrapped-around number. */
    put("/slice/app", "memory.max", "52428800\n");
    assert_true(cg_read_room(dir, tree, 2, &room, &limit, &usage));
    assert_int_equal(room, 0);
    /* A cgroup whose own files are gone (removed) cannot be read. */
    snprintf(dir, sizeof dir, "%s/slice/gone", tree);
    assert_false(cg_read_room(dir, tree, 2, &room, &limit, &usage));
}

static void test_room_v1_tree(void **state)
{
    (void)state;
    /* v1 writes "no limit" as a page-rounded LONG_MAX. */
    put("", "memory.limit_in_bytes", "9223372036854771712\n");
    put("", "memory.usage_in_bytes", "4000000000\n");
    put("/a", "memory.limit_in_bytes", "268435456\n");
    put("/a", "memory.usage_in_bytes", "16777216\n");
    put("/a/b", "memory.limit_in_bytes", "9223372036854771712\n");
    put("/a/b", "memory.usage_in_bytes", "8388608\n");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/a/b", tree);
    uint64_t room, limit, usage;
    assert_true(cg_read_room(dir, tree, 1, &room, &limit, &usage));
    assert_true(limit == UINT64_MAX);
    assert_int_equal(usage, 8 * MIB);
    assert_int_equal(room, 240 * MIB); /* the parent's */
    put("/a/b", "memory.usage_in_bytes", "not a number\n");
    assert_false(cg_read_room(dir, tree, 1, &room, &limit, &usage));
}

/* ---- this machine's hierarchy ---- */

static void test_own_cgroup_of_this_machine(void **state)
{
    (void)state;
    struct cg_where w;
    if (!cg_locate(getpid(), &w)) {
        print_message("no memory cgroup hierarchy is mounted here: nothing to read\n");
        return;
    }
    uint64_t room, limit, usage;
    assert_true(cg_read_room(w.dir, w.top, w.version, &room, &limit, &usage));
    print_message("memory cgroup v%d %s at %s: limit %s, usage %llu KiB\n", w.version, w.path, w.dir,
                  limit == UINT64_MAX ? "none" : "set", (unsigned long long)(usage / 1024));
    assert_true(usage > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proc_cgroup_v1_memory_line),
        cmocka_unit_test(test_proc_cgroup_v2_only),
        cmocka_unit_test(test_proc_cgroup_rejects_nonsense),
        cmocka_unit_test(test_mountinfo_lines),
        cmocka_unit_test(test_directory_of_a_path),
        cmocka_unit_test_setup_teardown(test_room_v2_tree, tree_make, tree_remove),
        cmocka_unit_test_setup_teardown(test_room_v1_tree, tree_make, tree_remove),
        cmocka_unit_test(test_own_cgroup_of_this_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
