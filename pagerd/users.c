/* Per-uid accounting, so that no local user can starve the others: the
 * connections, sessions and SuperSlabs of each uid (from SO_PEERCRED)
 * against its own limits, and a rate limit on status requests, per uid
 * and per connection (each request walks every client). A uid's record
 * outlives its last connection by a second, so that reconnecting does
 * not refill its status bucket. */
#include <stdlib.h>

#include "pagerd.h"

static struct user *find(uid_t uid)
{
    struct user *u;
    TAILQ_FOREACH(u, &pd.users, entry)
        if (u->uid == uid)
            return u;
    return NULL;
}

/* A new connection of uid; NULL (counted as refused) past its cap. */
struct user *user_connect(uid_t uid)
{
    struct user *u = find(uid);
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u)
            return NULL;
        u->uid = uid;
        TAILQ_INSERT_TAIL(&pd.users, u, entry);
        pd.nusers++;
    }
    if (u->conns >= pd.set.connections_uid) {
        u->refused++;
        return NULL;
    }
    u->conns++;
    return u;
}

void user_disconnect(struct user *u)
{
    u->conns--;
    u->idle_ms = now_ms();
}

/* Records of uids without connections whose bucket has refilled. */
void users_tick(uint64_t now)
{
    struct user *u, *next;
    for (u = TAILQ_FIRST(&pd.users); u; u = next) {
        next = TAILQ_NEXT(u, entry);
        if (u->conns == 0 && now - u->idle_ms >= 1000) {
            TAILQ_REMOVE(&pd.users, u, entry);
            pd.nusers--;
            free(u);
        }
    }
}

bool user_may_open_session(struct user *u)
{
    if (u->sessions < pd.set.sessions_uid)
        return true;
    u->refused++;
    return false;
}

/* A token bucket: status_per_sec a second, as many at once. */
bool rate_take(struct rate *r, uint64_t now)
{
    double per_ms = pd.set.status_per_sec / 1000.0;
    r->tokens += (double)(now - r->ms) * per_ms;
    if (r->tokens > pd.set.status_per_sec)
        r->tokens = pd.set.status_per_sec;
    r->ms = now;
    if (r->tokens < 1.0)
        return false;
    r->tokens -= 1.0;
    return true;
}
