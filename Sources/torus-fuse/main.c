// torus-fuse: an NBD export as the file DIR/disk, through FUSE, for a loop device (torus attach).
// Like libnbd's nbdfuse, plus what `torus attach` needs and nbdfuse lacks: on SIGUSR1 it
// reconnects and takes the export's new size, so a resized volume grows its attached device.
// Usage: torus-fuse [-r] [-C CONNECTIONS] -P PIDFILE DIR NBD-URI
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <libnbd.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONNECTIONS_MAX 16

// One NBD connection; a request holds its lock (libnbd's synchronous calls take one at a time).
struct connection {
    pthread_mutex_t lock;
    struct nbd_handle *nbd;
};

static struct connection connections[CONNECTIONS_MAX];
static int connection_count = 4;
static const char *uri, *pid_file;
static int read_only;
static _Atomic int64_t export_size;
static atomic_uint next_connection;

static struct nbd_handle *connect_export(void) {
    struct nbd_handle *h = nbd_create();
    if (h == NULL) return NULL;
    nbd_set_uri_allow_local_file(h, true);  // nbds://...?tls-certificates=DIR: the operator's own URI
    if (nbd_connect_uri(h, uri) == -1) {
        fprintf(stderr, "torus-fuse: cannot connect to %s: %s\n", uri, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    if (!read_only && nbd_is_read_only(h) == 1) {
        fprintf(stderr, "torus-fuse: %s is read-only: use -r\n", uri);
        nbd_close(h);
        return NULL;
    }
    return h;
}

// Set when a flush on an old connection failed at a reconnect: the server's writer may have been
// replaced, so writes not flushed may be lost; from then on every request fails, as a closed
// NBD connection would (the filesystem must learn of it, not carry on).
static atomic_int broken;

// Opens every connection anew, then swaps them in one by one (each old one flushed first, under
// its lock), then publishes the new size: requests past the old end only ever reach new
// connections. Returns -1 if a connection could not be opened (the old ones stay).
static int reconnect(void) {
    struct nbd_handle *fresh[CONNECTIONS_MAX];
    for (int i = 0; i < connection_count; i++) {
        fresh[i] = connect_export();
        if (fresh[i] == NULL) {
            while (i-- > 0) nbd_close(fresh[i]);
            return -1;
        }
    }
    int64_t size = nbd_get_size(fresh[0]);
    struct nbd_handle *old[CONNECTIONS_MAX];
    for (int i = 0; i < connection_count; i++) {
        pthread_mutex_lock(&connections[i].lock);
        old[i] = connections[i].nbd;
        if (old[i] != NULL && !read_only && nbd_flush(old[i], 0) == -1) {
            fprintf(stderr, "torus-fuse: flush before reconnecting failed (%s): writes may be lost; failing every request\n",
                    nbd_get_error());
            atomic_store(&broken, 1);
        }
        connections[i].nbd = fresh[i];
        pthread_mutex_unlock(&connections[i].lock);
    }
    if (size > 0) atomic_store(&export_size, size);
    for (int i = 0; i < connection_count; i++) {
        if (old[i] == NULL) continue;
        nbd_shutdown(old[i], 0);
        nbd_close(old[i]);
    }
    return atomic_load(&broken) ? -1 : 0;
}

// SIGUSR1: take the new size (torus attach --refresh, after `torus volume resize`).
static void *refresher(void *arg) {
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0) continue;
        if (reconnect() == 0)
            fprintf(stderr, "torus-fuse: %s is now %lld bytes\n", uri, (long long)atomic_load(&export_size));
    }
    return NULL;
}

static struct connection *pick(void) {
    return &connections[atomic_fetch_add(&next_connection, 1) % (unsigned)connection_count];
}

static void *on_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    cfg->direct_io = 1;  // no page cache: the loop device above caches, and sizes change
    cfg->attr_timeout = 0;
    cfg->entry_timeout = 0;
    cfg->negative_timeout = 0;
    FILE *f = fopen(pid_file, "w");  // ready: the mount is up
    if (f != NULL) {
        fprintf(f, "%d\n", getpid());
        fclose(f);
    }
    return NULL;
}

static int on_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    (void)fi;
    memset(st, 0, sizeof *st);
    if (strcmp(path, "/") == 0) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else if (strcmp(path, "/disk") == 0) {
        st->st_mode = S_IFREG | (read_only ? 0400 : 0600);
        st->st_nlink = 1;
        st->st_size = atomic_load(&export_size);
    } else {
        return -ENOENT;
    }
    return 0;
}

static int on_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
    (void)off; (void)fi; (void)flags;
    if (strcmp(path, "/") != 0) return -ENOENT;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    fill(buf, "disk", NULL, 0, 0);
    return 0;
}

static int on_open(const char *path, struct fuse_file_info *fi) {
    if (strcmp(path, "/disk") != 0) return -ENOENT;
    if (read_only && (fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    fi->direct_io = 1;
    return 0;
}

// The error of the last libnbd call as a negative errno (EIO when it gave none).
static int failed(void) {
    int e = nbd_get_errno();
    fprintf(stderr, "torus-fuse: %s\n", nbd_get_error());
    return -(e > 0 ? e : EIO);
}

static int on_read(const char *path, char *buf, size_t n, off_t off, struct fuse_file_info *fi) {
    (void)path; (void)fi;
    if (atomic_load(&broken)) return -EIO;
    int64_t size = atomic_load(&export_size);
    if (off >= size) return 0;
    if ((int64_t)n > size - off) n = (size_t)(size - off);
    struct connection *c = pick();
    pthread_mutex_lock(&c->lock);
    int r = nbd_pread(c->nbd, buf, n, (uint64_t)off, 0);
    pthread_mutex_unlock(&c->lock);
    return r == -1 ? failed() : (int)n;
}

static int on_write(const char *path, const char *buf, size_t n, off_t off, struct fuse_file_info *fi) {
    (void)path; (void)fi;
    if (atomic_load(&broken)) return -EIO;
    int64_t size = atomic_load(&export_size);
    if (off + (int64_t)n > size) return -ENOSPC;
    struct connection *c = pick();
    pthread_mutex_lock(&c->lock);
    int r = nbd_pwrite(c->nbd, buf, n, (uint64_t)off, 0);
    pthread_mutex_unlock(&c->lock);
    return r == -1 ? failed() : (int)n;
}

// A flush on one connection covers the writes completed on all (the server sets MULTI_CONN).
static int on_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)path; (void)datasync; (void)fi;
    if (atomic_load(&broken)) return -EIO;
    if (read_only) return 0;
    struct connection *c = pick();
    pthread_mutex_lock(&c->lock);
    int r = nbd_flush(c->nbd, 0);
    pthread_mutex_unlock(&c->lock);
    return r == -1 ? failed() : 0;
}

// Discards from the loop device arrive as hole punches: NBD TRIM (and WRITE_ZEROES for zeroing).
static int on_fallocate(const char *path, int mode, off_t off, off_t n, struct fuse_file_info *fi) {
    (void)path; (void)fi;
    if (atomic_load(&broken)) return -EIO;
    if (read_only) return -EROFS;
    if (!(mode & FALLOC_FL_KEEP_SIZE) && off + n > atomic_load(&export_size)) return -ENOSPC;
    struct connection *c = pick();
    pthread_mutex_lock(&c->lock);
    int r;
    if (mode & FALLOC_FL_PUNCH_HOLE) r = nbd_trim(c->nbd, (uint64_t)n, (uint64_t)off, 0);
    else if (mode & FALLOC_FL_ZERO_RANGE) r = nbd_zero(c->nbd, (uint64_t)n, (uint64_t)off, 0);
    else r = 0;  // plain allocation: every byte of a volume is there already
    pthread_mutex_unlock(&c->lock);
    return r == -1 ? failed() : 0;
}

// Unmounted (torus detach): flush and say goodbye to the server on every connection.
static void on_destroy(void *data) {
    (void)data;
    for (int i = 0; i < connection_count; i++) {
        pthread_mutex_lock(&connections[i].lock);
        if (connections[i].nbd != NULL) {
            if (!read_only && !atomic_load(&broken) && i == 0) nbd_flush(connections[i].nbd, 0);
            nbd_shutdown(connections[i].nbd, 0);
        }
        pthread_mutex_unlock(&connections[i].lock);
    }
}

static const struct fuse_operations operations = {
    .init = on_init, .destroy = on_destroy, .getattr = on_getattr, .readdir = on_readdir, .open = on_open,
    .read = on_read, .write = on_write, .fsync = on_fsync, .fallocate = on_fallocate,
};

static int usage(void) {
    fprintf(stderr, "usage: torus-fuse [-r] [-C CONNECTIONS] -P PIDFILE DIR NBD-URI\n");
    return 2;
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "rC:P:")) != -1) {
        switch (opt) {
        case 'r': read_only = 1; break;
        case 'C': connection_count = atoi(optarg); break;
        case 'P': pid_file = optarg; break;
        default: return usage();
        }
    }
    if (argc - optind != 2 || pid_file == NULL || connection_count < 1 || connection_count > CONNECTIONS_MAX) return usage();
    const char *dir = argv[optind];
    uri = argv[optind + 1];
    for (int i = 0; i < connection_count; i++) pthread_mutex_init(&connections[i].lock, NULL);
    if (reconnect() != 0) return 1;

    // SIGUSR1 goes to the refresher thread only: blocked here, before FUSE starts its threads.
    static sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    pthread_t thread;
    pthread_create(&thread, NULL, refresher, &usr1);

    char *fuse_argv[] = {argv[0], "-f", "-o", read_only ? "ro,fsname=torus" : "fsname=torus", (char *)dir, NULL};
    return fuse_main(5, fuse_argv, &operations, NULL);
}
