// What a spawn costs by where the child lands in cgroup2: clone3(CLONE_VFORK) of /bin/sleep,
// timed from just before the clone until it returns (the child has exec'd), 40 spawns one
// at a time, the previous child killed and reaped first, 150 ms of quiet between.
//
//   cc -O2 -o /tmp/clone-cgroup bench/clone-cgroup.c && sudo /tmp/clone-cgroup /sys/fs/cgroup/unified
//
// The argument is a cgroup2 mount (or a directory in one) where root may create directories.
// Modes: no cgroup; a fresh empty directory per spawn (what herd does); one directory reused,
// empty between spawns; the same with the old child left a zombie until the new one ran; one
// directory another process keeps populated; the directory given.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SPAWNS 40

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static volatile double *child_ran; // shared with the child: when it reached exec

static pid_t spawn(int cgroup_fd) {
    struct clone_args a;
    memset(&a, 0, sizeof a);
    a.flags = CLONE_VFORK | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0);
    a.exit_signal = SIGCHLD;
    a.cgroup = cgroup_fd >= 0 ? (unsigned)cgroup_fd : 0;
    pid_t pid = syscall(SYS_clone3, &a, sizeof a);
    if (pid == 0) {
        *child_ran = now_ms();
        execl("/bin/sleep", "sleep", "100000", (char *)0);
        _exit(127);
    }
    return pid;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void join(const char *dir, pid_t pid) {
    char path[600], buf[32];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    int fd = open(path, O_WRONLY);
    snprintf(buf, sizeof buf, "%d", pid);
    if (fd < 0 || write(fd, buf, strlen(buf)) < 0) perror(path);
    close(fd);
}

static void run(const char *root, int mode, const char *name) {
    char base[256], kept[512], dir[512] = "";
    snprintf(base, sizeof base, "%s/clone-cgroup-bench", root);
    snprintf(kept, sizeof kept, "%s/kept", base);
    mkdir(base, 0755);
    mkdir(kept, 0755);
    pid_t holder = 0;
    if (mode == 3) {
        holder = fork();
        if (holder == 0) {
            join(kept, getpid());
            execl("/bin/sleep", "sleep", "600", (char *)0);
            _exit(127);
        }
        usleep(100000);
    }
    double took[SPAWNS], started[SPAWNS];
    pid_t prev = 0;
    for (int i = 0; i < SPAWNS; i++) {
        pid_t zombie = 0;
        if (prev && mode == 5) {
            // Dead but not reaped until the next child runs: its css_set stays alive.
            siginfo_t si;
            kill(prev, SIGKILL);
            waitid(P_PID, prev, &si, WEXITED | WNOWAIT);
            zombie = prev;
        } else if (prev) {
            kill(prev, SIGKILL);
            waitpid(prev, 0, 0);
        }
        if (mode == 1 && dir[0]) rmdir(dir);
        usleep(150000);
        double t0 = now_ms();
        int fd = -1;
        if (mode == 1) {
            snprintf(dir, sizeof dir, "%s/c%d", base, i);
            mkdir(dir, 0755);
            fd = open(dir, O_RDONLY | O_DIRECTORY);
        } else if (mode == 2 || mode == 3 || mode == 5) {
            fd = open(kept, O_RDONLY | O_DIRECTORY);
        } else if (mode == 4) {
            fd = open(root, O_RDONLY | O_DIRECTORY);
        }
        prev = spawn(fd);
        took[i] = now_ms() - t0;
        started[i] = *child_ran - t0;
        if (fd >= 0) close(fd);
        if (zombie) waitpid(zombie, 0, 0);
    }
    kill(prev, SIGKILL);
    waitpid(prev, 0, 0);
    if (holder) {
        kill(holder, SIGKILL);
        waitpid(holder, 0, 0);
    }
    if (dir[0]) rmdir(dir);
    rmdir(kept);
    rmdir(base);
    qsort(took, SPAWNS, sizeof(double), by_value);
    qsort(started, SPAWNS, sizeof(double), by_value);
    printf("%-44s clone -> exec'd: median %.3f ms, p90 %.3f ms; child running after %.3f ms\n",
           name, took[SPAWNS / 2], took[SPAWNS * 9 / 10], started[SPAWNS / 2]);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CGROUP2_DIR\n", argv[0]);
        return 2;
    }
    child_ran = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    run(argv[1], 0, "no cgroup");
    run(argv[1], 1, "a fresh empty cgroup per spawn (herd)");
    run(argv[1], 2, "one cgroup reused, empty between spawns");
    run(argv[1], 5, "one cgroup reused, the old child a zombie");
    run(argv[1], 3, "one cgroup another process keeps populated");
    run(argv[1], 4, "the directory given (the caller's, at the root)");
    return 0;
}
