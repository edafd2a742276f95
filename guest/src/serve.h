#ifndef EMBERD_SERVE_H
#define EMBERD_SERVE_H

#include "control.h"

/* The agent's event loop: serves the protocol on `c` forever (PID 1 never returns). */
void __attribute__((noreturn)) serve(struct control *c);

#endif
