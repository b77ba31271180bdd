/* Fault handlers that keep the handler they found: installing one, and handing it the faults that are
 * not ours. Shared by the block copier (_cow.c, SIGSEGV) and the guard of cut-short files (_guard.c,
 * SIGBUS). Only async-signal-safe calls run in ws_chain. */
#ifndef WORLDSTORE_SIGNALS_H
#define WORLDSTORE_SIGNALS_H

#include <signal.h>
#include <string.h>

typedef void (*ws_fault_handler)(int, siginfo_t *, void *);

/* Install `handler` for `sig` unless it is installed already, keeping the one found in `previous`.
 * 0, or -1. `installed` says whether it was installed once (something, faulthandler say, may have
 * replaced it since: it is installed again, and chains to that one). */
static inline int ws_install(int sig, ws_fault_handler handler, struct sigaction *previous, int *installed)
{
    struct sigaction current;
    if (sigaction(sig, NULL, &current) != 0)
        return -1;
    if (*installed && (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == handler)
        return 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handler;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    if (sigaction(sig, &action, previous) != 0)
        return -1;
    *installed = 1;
    return 0;
}

/* A fault that is not ours: to the handler found before, or, with none, the default action (the fault
 * happens again and ends the process as it would have). */
static inline void ws_chain(const struct sigaction *previous, int sig, siginfo_t *info, void *context)
{
    if (previous->sa_flags & SA_SIGINFO) {
        if (previous->sa_sigaction) {
            previous->sa_sigaction(sig, info, context);
            return;
        }
    } else if (previous->sa_handler != SIG_DFL && previous->sa_handler != SIG_IGN) {
        previous->sa_handler(sig);
        return;
    }
    signal(sig, SIG_DFL);
}

#endif
