/* The echo_protocol row's work with no Python and no event loop: what the
 * kernel allows on this machine.
 *
 * Same shape as the row (ferroloop/bench/rows/streams.py): 10 loopback TCP
 * connections with TCP_NODELAY, client and server ends in one thread; each
 * client sends 1 KiB, the server echoes it, the client sends again once the
 * whole 1 KiB is back.  One epoll set, edge-triggered reads, the sends of a
 * turn made at its end.  Per round trip that is the minimum any loop makes:
 * 2 send, 2 recv and a share of one epoll_wait.
 *
 * A loop's echo_protocol rate divided by this program's rate is the share of
 * the ceiling it reaches.  Build and run: scripts/echo-ceiling.sh. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNS 10
#define MSG 1024
#define MAX_READ 262144

struct end {
    int fd;
    int client;
    long left;    /* client: round trips still to make */
    long pending; /* client: bytes of the current message not back yet */
    int out;      /* bytes to send at the end of this turn */
    char buf[MAX_READ];
};

static struct end ends[2 * CONNS];

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    long per = argc > 1 ? atol(argv[1]) : 20000;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0 || bind(ls, (void *)&a, sizeof a) || listen(ls, CONNS) ||
        getsockname(ls, (void *)&a, &alen))
        die("listen");
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < CONNS; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (void *)&a, sizeof a))
            die("connect");
        int s = accept(ls, NULL, NULL);
        if (s < 0)
            die("accept");
        ends[2 * i] = (struct end){.fd = c, .client = 1, .left = per};
        ends[2 * i + 1] = (struct end){.fd = s};
        for (int k = 2 * i; k < 2 * i + 2; k++) {
            struct epoll_event e = {.events = EPOLLIN | EPOLLET | EPOLLRDHUP, .data.u32 = k};
            if (setsockopt(ends[k].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
                fcntl(ends[k].fd, F_SETFL, O_NONBLOCK) ||
                epoll_ctl(ep, EPOLL_CTL_ADD, ends[k].fd, &e))
                die("setup");
        }
    }
    char msg[MSG];
    memset(msg, 'x', MSG);
    double t0 = now();
    int active = CONNS;
    for (int i = 0; i < CONNS; i++) {
        if (send(ends[2 * i].fd, msg, MSG, MSG_NOSIGNAL) != MSG)
            die("send");
        ends[2 * i].pending = MSG;
    }
    struct epoll_event ev[64];
    int outq[64];
    while (active) {
        int n = epoll_wait(ep, ev, 64, -1);
        if (n < 0)
            die("epoll_wait");
        int nq = 0;
        for (int j = 0; j < n; j++) {
            struct end *e = &ends[ev[j].data.u32];
            ssize_t r = recv(e->fd, e->buf, MAX_READ, 0);
            if (r <= 0)
                die("recv");
            if (!e->client) {
                e->out = (int)r;
                outq[nq++] = (int)ev[j].data.u32;
            } else if ((e->pending -= r) == 0) {
                if (--e->left) {
                    memcpy(e->buf, msg, MSG);
                    e->out = MSG;
                    e->pending = MSG;
                    outq[nq++] = (int)ev[j].data.u32;
                } else {
                    active--;
                }
            }
        }
        for (int j = 0; j < nq; j++) {
            struct end *e = &ends[outq[j]];
            if (send(e->fd, e->buf, e->out, MSG_NOSIGNAL) != e->out)
                die("send");
        }
    }
    double dt = now() - t0;
    printf("%.0f round trips/s\n", per * CONNS / dt);
    return 0;
}
