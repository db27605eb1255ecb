/*
 * store_int: what the SQLite store's files share: the connection and the
 * statement helpers. Only src/store/ includes it.
 */
#ifndef SPROUT_STORE_INT_H
#define SPROUT_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

struct store {
        sqlite3 *db;
        /* A second connection for store_txn, so that a transaction holds
         * exactly its own statements and never another thread's. */
        struct store *tx;
        pthread_mutex_t tx_lock; /* one transaction at a time */
};

/* SQLite's result code as -errno (0 for OK, DONE and ROW). */
int sq_err(int rc);
/* Prepares sql and binds its parameters, one per character of types:
 * 's' a string (NULL binds NULL), 'i' an int, 'I' an int64_t. Numbered
 * parameters (?1, ?2) take them in that order too. */
int sq_prepare(struct store *s, sqlite3_stmt **ret, const char *sql, const char *types, ...);
/* Runs a prepared write to its end and finalizes it. With must_change,
 * a statement that changed no row is -ENOENT. */
int sq_finish(struct store *s, sqlite3_stmt *st, int must_change);
/* Runs a prepared query of one number and finalizes it. */
int sq_scalar(sqlite3_stmt *st, int64_t *ret);
/* A column's text, malloc'd; NULL for NULL (or out of memory). */
char *sq_col_dup(sqlite3_stmt *st, int i);

/* The writes that change one record: prepare, bind, run; -ENOENT when the
 * record is not there. */
#define WRITE_ONE(s, sql, types, ...)                                                                        \
        ({                                                                                                   \
                sqlite3_stmt *st_;                                                                           \
                int r_ = sq_prepare((s), &st_, (sql), (types), __VA_ARGS__);                                 \
                r_ < 0 ? r_ : sq_finish((s), st_, 1);                                                        \
        })

#endif
