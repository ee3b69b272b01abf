#ifndef TOKENVAULT_SYSTEM_SHIMS_H
#define TOKENVAULT_SYSTEM_SHIMS_H

#include <stddef.h>
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

/// Catches each of `signals` (count of them) with a handler that writes two bytes to `pipe_fd` (which
/// must be non-blocking): the signal number, and 1 when the kernel sent it (a terminal's ^C, which the
/// whole foreground process group already received) or 0 when a process did (kill(1), systemd).
/// Unblocks them in the calling thread, which should be the one that polls the pipe.
/// 0 on success, -1 with errno set. For `tokenvault run`.
int tv_forward_signals(int pipe_fd, const int *signals, int count);

/// Puts back the default action of `signo` and unblocks it (before re-raising a child's death signal).
void tv_default_signal(int signo);

/// posix_spawnp(3) of argv[0] with environment `envp`, every signal at its default action and none
/// blocked, and descriptors `from[i]` duplicated onto `to[i]` in the child (so they are inherited even
/// when the originals are close-on-exec). 0 and *pid on success, else the error number.
int tv_spawn(int *pid, char *const argv[], char *const envp[], const int *from, const int *to, int count);

/// memfd_create(name, MFD_CLOEXEC): an anonymous RAM file. -1 with errno set on failure.
int tv_memfd(const char *name);

/// memmem(3) and memrchr(3), GNU extensions that Swift's Glibc module leaves out (the audit scanner's
/// grep-speed search for a literal, and the start of the line it was found in).
const void *tv_memmem(const void *haystack, size_t count, const void *needle, size_t needle_count);
const void *tv_memrchr(const void *bytes, int c, size_t count);

/// Names the calling thread as `top -H` and `ps -L` show it (at most 15 bytes are kept).
void tv_set_thread_name(const char *name);

/// Moves the calling thread (only it) to SCHED_IDLE: it runs only when no other thread of the machine
/// wants the CPU. A thread may always lower its own priority; it cannot raise it back without privilege,
/// so call this only on a thread that does nothing but background work. 0 on success, -1 with errno set.
int tv_make_thread_idle(void);

/// The CPUs the calling thread may run on (its affinity mask, which a service manager's CPUAffinity=
/// or taskset(1) may have narrowed), in increasing order: at most `max` of them written to `cpus`.
/// Their count on success (which may exceed `max`), -1 with errno set.
int tv_allowed_cpus(int *cpus, int max);

/// Keeps the calling thread (only it) on CPU `cpu` from now on. 0 on success, -1 with errno set.
int tv_pin_thread_to_cpu(int cpu);

#endif
