#ifndef TOKENVAULT_SYSTEM_SHIMS_H
#define TOKENVAULT_SYSTEM_SHIMS_H

#include <stdint.h>

/// The kernel's view of a Unix-socket peer (SO_PEERCRED). The fields are those of glibc's
/// `struct ucred`, which glibc only declares under _GNU_SOURCE; shims.c checks the layout against
/// the real struct at compile time, so this can be handed to getsockopt directly.
typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} tv_peer_credentials;

/// The SO_PEERCRED option name and the size of `struct ucred`.
int tv_so_peercred(void);

/// getsockopt(fd, SOL_SOCKET, SO_PEERCRED): 0 on success, -1 with errno set.
int tv_get_peer_credentials(int fd, tv_peer_credentials *out);

/// prctl(PR_SET_DUMPABLE, 0) and RLIMIT_CORE 0: no core dump or ptrace attach by other processes of the
/// same user can read keys or tokens out of this process. 0 on success.
int tv_harden_process(void);

#endif
