// Glibc declares `struct ucred` and SO_PEERCRED only under _GNU_SOURCE; define it here, in C,
// rather than redeclaring the struct in Swift.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include "CSystemShims.h"

_Static_assert(sizeof(tv_peer_credentials) == sizeof(struct ucred), "tv_peer_credentials must match struct ucred");
_Static_assert(offsetof(tv_peer_credentials, pid) == offsetof(struct ucred, pid), "pid offset");
_Static_assert(offsetof(tv_peer_credentials, uid) == offsetof(struct ucred, uid), "uid offset");
_Static_assert(offsetof(tv_peer_credentials, gid) == offsetof(struct ucred, gid), "gid offset");

int tv_so_peercred(void) { return SO_PEERCRED; }

int tv_get_peer_credentials(int fd, tv_peer_credentials *out) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    if (len != sizeof cred) { errno = EINVAL; return -1; }
    out->pid = cred.pid;
    out->uid = cred.uid;
    out->gid = cred.gid;
    return 0;
}

int tv_harden_process(void) {
    struct rlimit none = {0, 0};
    int a = setrlimit(RLIMIT_CORE, &none);
    int b = prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    return (a == 0 && b == 0) ? 0 : -1;
}
