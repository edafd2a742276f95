#ifndef EMBERD_MODULES_H
#define EMBERD_MODULES_H

/* finit_module() DIR/NAME.ko for every NAME in DIR/load-order, in that order. */
void load_modules(const char *dir);

#endif
