// /lib/modules/load-order in the initramfs: the modules in the order to load them, written for
// the guest agent so that it need not parse ELF .modinfo itself. This file and the agent's reader
// (guest/) must agree on the format; targets/initramfs.test.ts pins it.
//
// Format (ASCII, what formatLoadOrder writes):
// - one module name per line, each line ended by "\n" (the last one too); no blank lines, no
//   comments, no surrounding spaces;
// - a name is the module's name as the kernel spells it (`_`, never `-`: "virtio_ring"), without
//   ".ko": 1 to 55 characters of [A-Za-z0-9_] (the kernel's own limit, MODULE_NAME_LEN 56 with
//   its NUL, so a reader may use a 64-byte buffer); its file is /lib/modules/<name>.ko, flat,
//   next to load-order;
// - every .ko in /lib/modules is listed exactly once, and nothing else is;
// - in load order: each module comes after every module its .modinfo `depends=` names, so
//   finit_module(2) in file order succeeds; otherwise in the order INITRAMFS_MODULES asks for.

const MODULE_NAME = /^[A-Za-z0-9_]{1,55}$/;

/** The file's bytes for modules already in load order. */
export function formatLoadOrder(order: readonly string[]): Buffer {
  const seen = new Set<string>();
  for (const m of order) {
    if (!MODULE_NAME.test(m)) throw new Error(`module name ${JSON.stringify(m)} cannot be written to load-order`);
    if (seen.has(m)) throw new Error(`module ${m} is listed twice in load-order`);
    seen.add(m);
  }
  return Buffer.from(order.map((m) => `${m}\n`).join(''));
}
