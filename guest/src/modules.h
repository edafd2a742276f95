#ifndef EMBERD_MODULES_H
#define EMBERD_MODULES_H

/* finit_module() every DIR/NAME.ko, dependencies first. */
void load_modules(const char *dir);

#endif
