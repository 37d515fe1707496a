/*
 * socketmap-client: the lookup load of BenchmarkSocketmap. Like Postfix's
 * socketmap client (dict_sockmap), each connection sends one request and
 * waits for its reply with blocking reads and writes; one thread per
 * connection stands for one smtpd or cleanup process.
 *
 *   socketmap-client HOST PORT FILE...
 *
 * Each FILE holds the requests of one connection, "name key" per line. It
 * prints how many replies were OK per connection, then the nanoseconds from
 * the first request to the last reply. Any reply other than OK or NOTFOUND,
 * or any I/O error, exits 1.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
	int fd;
	char **reqs; /* netstrings */
	size_t *lens, n;
	long found;
};

static void die(const char *what) {
	perror(what);
	exit(1);
}

static void load(struct conn *c, const char *path) {
	FILE *f = fopen(path, "r");
	if (!f) die(path);
	char line[1024];
	size_t cap = 0;
	while (fgets(line, sizeof line, f)) {
		size_t l = strcspn(line, "\n");
		line[l] = 0;
		if (c->n == cap) {
			cap = cap ? 2 * cap : 1024;
			c->reqs = realloc(c->reqs, cap * sizeof *c->reqs);
			c->lens = realloc(c->lens, cap * sizeof *c->lens);
			if (!c->reqs || !c->lens) die("realloc");
		}
		char *ns = malloc(l + 16);
		if (!ns) die("malloc");
		c->lens[c->n] = (size_t)sprintf(ns, "%zu:%s,", l, line);
		c->reqs[c->n++] = ns;
	}
	fclose(f);
}

static void *run(void *arg) {
	struct conn *c = arg;
	char buf[4096];
	for (size_t i = 0; i < c->n; i++) {
		if (write(c->fd, c->reqs[i], c->lens[i]) != (ssize_t)c->lens[i]) die("write");
		size_t got = 0;
		for (;;) {
			ssize_t k = read(c->fd, buf + got, sizeof buf - 1 - got);
			if (k <= 0) die("read");
			got += (size_t)k;
			buf[got] = 0;
			char *colon = memchr(buf, ':', got);
			if (!colon) continue;
			size_t len = strtoul(buf, 0, 10), head = (size_t)(colon - buf) + 1;
			if (got < head + len + 1) continue;
			if (buf[head + len] != ',') { fprintf(stderr, "bad reply %s\n", buf); exit(1); }
			if (!strncmp(colon + 1, "OK ", 3)) c->found++;
			else if (strncmp(colon + 1, "NOTFOUND ", 9)) { fprintf(stderr, "reply %s\n", buf); exit(1); }
			break;
		}
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 4) {
		fprintf(stderr, "usage: socketmap-client HOST PORT FILE...\n");
		return 2;
	}
	int n = argc - 3;
	struct conn *cs = calloc((size_t)n, sizeof *cs);
	pthread_t *ts = calloc((size_t)n, sizeof *ts);
	if (!cs || !ts) die("calloc");
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET;
	a.sin_port = htons((unsigned short)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", argv[1]); return 2; }
	for (int i = 0; i < n; i++) {
		load(&cs[i], argv[3 + i]);
		cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (cs[i].fd < 0 || connect(cs[i].fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
	}
	struct timespec s, e;
	clock_gettime(CLOCK_MONOTONIC, &s);
	for (int i = 0; i < n; i++)
		if (pthread_create(&ts[i], 0, run, &cs[i])) die("pthread_create");
	for (int i = 0; i < n; i++) pthread_join(ts[i], 0);
	clock_gettime(CLOCK_MONOTONIC, &e);
	for (int i = 0; i < n; i++) printf("%ld ", cs[i].found);
	printf("\n%lld\n", (long long)(e.tv_sec - s.tv_sec) * 1000000000LL + (e.tv_nsec - s.tv_nsec));
	return 0;
}
