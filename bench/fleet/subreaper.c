/* bench:fleet: runs argv[1..] as a child subreaper (PR_SET_CHILD_SUBREAPER survives
 * execve). The bench starts each test host's sshd through this, so that a process that
 * outlives its SSH session (our agent ends on the EOF that follows the session's end, and a
 * session may exit before reaping a child that just finished) is reparented to that sshd,
 * which reaps every child, instead of to init: the sshd's cutime + cstime then hold the CPU
 * of everything the host ran for us, and "no descendants left" means it is all counted. */
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PROGRAM [ARG...]\n", argv[0]);
        return 127;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL) != 0) {
        fprintf(stderr, "subreaper: prctl(PR_SET_CHILD_SUBREAPER): %s\n", strerror(errno));
        return 127;
    }
    execv(argv[1], argv + 1);
    fprintf(stderr, "subreaper: execv %s: %s\n", argv[1], strerror(errno));
    return 127;
}
