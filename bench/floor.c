/* The C floor: an epoll FastCGI responder that answers canned bytes.
 *
 * What nginx + FastCGI cost per request here when the backend does
 * nothing: one read and one write per request, no parsing beyond the
 * record headers.  bench/run.py compiles it into its temp dir (cc -O2)
 * and puts it in the table under fcgi-lua (bench/README.md).  Not a
 * server to use: it answers every request with the same "Hello, world!".
 *
 *     cc -O2 -o /tmp/floor bench/floor.c && /tmp/floor /tmp/floor.sock
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF 65536
#define MAXFD 65536

static const char BODY[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nHello, world!\n";

struct conn {
    unsigned char in[BUF];
    size_t len;
    int keep;
};

static struct conn *conns[MAXFD];

static size_t answer(unsigned char *out, unsigned id) {
    size_t n = sizeof BODY - 1, at = 0;
    unsigned char h[8] = {1, 6, id >> 8, id & 255, n >> 8, n & 255, 0, 0};
    memcpy(out + at, h, 8); at += 8;
    memcpy(out + at, BODY, n); at += n;
    unsigned char e[16] = {1, 3, id >> 8, id & 255, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(out + at, e, 16); at += 16;
    return at;
}

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

/* Read what is there; answer every request whose STDIN ended. */
static void serve(int ep, int fd) {
    struct conn *c = conns[fd];
    unsigned char out[BUF];
    for (;;) {
        ssize_t got = read(fd, c->in + c->len, BUF - c->len);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(ep, fd);
            return;
        }
        if (got < 0)
            return;
        c->len += (size_t)got;
        size_t pos = 0, n = 0;
        while (c->len - pos >= 8) {
            unsigned char *h = c->in + pos;
            size_t clen = (size_t)h[4] << 8 | h[5], end = pos + 8 + clen + h[6];
            if (end > c->len)
                break;
            unsigned id = (unsigned)h[2] << 8 | h[3];
            if (h[1] == 1)
                c->keep = h[10] & 1;
            else if (h[1] == 5 && clen == 0 && n + 128 < BUF)
                n += answer(out + n, id);
            pos = end;
        }
        memmove(c->in, c->in + pos, c->len - pos);
        c->len -= pos;
        if (n) {
            if (send(fd, out, n, MSG_NOSIGNAL) < 0 || !c->keep) { /* no SIGPIPE */
                drop(ep, fd);
                return;
            }
        }
        if (c->len == BUF) { /* a record larger than the buffer: not FastCGI from nginx */
            drop(ep, fd);
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
        return 2;
    }
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    unlink(argv[1]);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4096)) {
        perror(argv[1]);
        return 1;
    }
    chmod(argv[1], 0666);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, events[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd != lfd) {
                serve(ep, fd);
                continue;
            }
            int cfd;
            while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                if (cfd >= MAXFD) {
                    close(cfd);
                    continue;
                }
                conns[cfd] = calloc(1, sizeof(struct conn));
                struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
            }
        }
    }
}
