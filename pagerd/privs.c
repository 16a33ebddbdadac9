/* Privileges: a daemon started as root (outside a service manager that
 * gives it a user of its own) serves as an ordinary user once its socket
 * is bound, keeping one capability: CAP_DAC_OVERRIDE, to write a client
 * cgroup's cgroup.procs when it places a charger there (charger.c). The
 * chargers it starts hold none. */
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pagerd.h"

static int capset_mask(uint64_t permitted, uint64_t effective)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    d[0].permitted = (uint32_t)permitted;
    d[1].permitted = (uint32_t)(permitted >> 32);
    d[0].effective = (uint32_t)effective;
    d[1].effective = (uint32_t)(effective >> 32);
    return (int)syscall(SYS_capset, &h, d);
}

/* Every capability gone (a charger's start). */
void privs_drop_all(void)
{
    capset_mask(0, 0);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* As root, become user (unless it is "root"); fatal if that fails. */
void privs_drop(const char *user)
{
    if (geteuid() != 0 || strcmp(user, "root") == 0)
        return;
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (!pw)
        fatalx("user '%s': %s", user, errno ? strerror(errno) : "no such user");
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (uid == 0)
        fatalx("user '%s' is root: name another user, or root itself to stay root", user);
    uint64_t keep = 1ull << CAP_DAC_OVERRIDE;
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
        setresuid(uid, uid, uid) < 0)
        fatal("becoming user '%s'", user);
    if (capset_mask(keep, keep) < 0)
        fatal("keeping CAP_DAC_OVERRIDE as '%s'", user);
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    if (setuid(0) == 0)
        fatalx("could become root again after dropping to '%s'", user);
    log_info("running as %s (uid %u, gid %u), keeping CAP_DAC_OVERRIDE to place chargers in clients' cgroups",
             user, (unsigned)uid, (unsigned)gid);
}
