// Glibc declares `struct ucred` and SO_PEERCRED only under _GNU_SOURCE; define it here, in C,
// rather than redeclaring the struct in Swift.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <string.h>
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

// MARK: - tokenvault run

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int forward_pipe = -1;

static void forward_handler(int signo, siginfo_t *info, void *context) {
    (void)context;
    int saved = errno;
    unsigned char message[2] = { (unsigned char)signo, (unsigned char)(info != NULL && info->si_code == SI_KERNEL) };
    ssize_t ignored = write(forward_pipe, message, 2);
    (void)ignored;
    errno = saved;
}

int tv_forward_signals(int pipe_fd, const int *signals, int count) {
    forward_pipe = pipe_fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = forward_handler;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigset_t unblock;
    sigemptyset(&unblock);
    for (int i = 0; i < count; i++) {
        if (sigaction(signals[i], &action, NULL) != 0) return -1;
        sigaddset(&unblock, signals[i]);
    }
    // A parent may have started us with these blocked (the mask is inherited): this thread takes them.
    return pthread_sigmask(SIG_UNBLOCK, &unblock, NULL) == 0 ? 0 : -1;
}

void tv_default_signal(int signo) {
    signal(signo, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

extern char **environ;

int tv_spawn(int *pid, char *const argv[], char *const envp[], const int *from, const int *to, int count) {
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    int rc = posix_spawnattr_init(&attr);
    if (rc != 0) return rc;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) { posix_spawnattr_destroy(&attr); return rc; }
    for (int i = 0; i < count && rc == 0; i++) rc = posix_spawn_file_actions_adddup2(&actions, from[i], to[i]);
    if (rc == 0) rc = posix_spawnp(pid, argv[0], &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return rc;
}

int tv_memfd(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}

const void *tv_memmem(const void *haystack, size_t count, const void *needle, size_t needle_count) {
    return memmem(haystack, count, needle, needle_count);
}

const void *tv_memrchr(const void *bytes, int c, size_t count) { return memrchr(bytes, c, count); }

int tv_make_thread_idle(void) {
    struct sched_param param = { .sched_priority = 0 };
    return sched_setscheduler(0, SCHED_IDLE, &param);
}

void tv_set_thread_name(const char *name) { (void)prctl(PR_SET_NAME, name, 0, 0, 0); }

int tv_allowed_cpus(int *cpus, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        if (count < max) cpus[count] = cpu;
        count++;
    }
    return count;
}

int tv_pin_thread_to_cpu(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) { errno = EINVAL; return -1; }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}
