// Target `python-data`: the python pack plus numpy, pandas and matplotlib from Debian bookworm,
// with matplotlib's Agg backend the default (/etc/matplotlibrc: the guest's environment is the
// agent's fixed one, so the rc file is what every exec and session reads) and its font cache
// built in. Test suites, GUI backends, C headers and fonts the default style and mathtext never
// load are left out.
//
// Debian's python3-matplotlib, python3-pil and python3-fonttools name packages for GUIs and font
// tooling that a headless pack never imports (python3-tk, libjs-jquery, scipy, sympy, lxml, ...):
// they are taken without their dependencies (extras), and what their modules do load is listed as
// roots, so apt still resolves and pins it.

import { chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { lexists, run } from '../util.ts';
import type { PackSpec } from './pack.ts';
import { removeDirs, removeFiles } from './prune.ts';
import { PYTHON_ROOTS, PYTHON_VERSION, makePythonRoot, pythonHostCommand } from './python-pack.ts';

const DIST = 'usr/lib/python3/dist-packages';
const MPL_DATA = 'usr/share/matplotlib/mpl-data';

export const PYTHON_DATA_PACK: PackSpec = {
  name: 'python-data',
  interpreter: ['python3', '-c'],
  roots: [
    ...PYTHON_ROOTS,
    'python3-numpy',
    'python3-pandas',
    // matplotlib's own imports and libraries
    'python3-dateutil',
    'python3-pyparsing',
    'python3-six',
    'python3-contourpy',
    'python3-cycler',
    'python3-kiwisolver',
    'python3-packaging',
    'libfreetype6',
    'libqhull-r8.0',
    // Pillow's extension modules' libraries (matplotlib writes PNGs through Pillow)
    'libimagequant0',
    'libjpeg62-turbo',
    'liblcms2-2',
    'libopenjp2-7',
    'libraqm0',
    'libtiff6',
    'libwebp7',
    'libwebpdemux2',
    'libwebpmux3',
    'libxcb1',
    'zlib1g',
  ],
  extras: ['ca-certificates', 'python3-matplotlib', 'python-matplotlib-data', 'python3-pil', 'python3-fonttools'],
  makeRoot: (tree, detail) =>
    makePythonRoot(tree, detail, PYTHON_DATA_PACK, {
      pruneMore: pruneData,
      compileDirs: [DIST],
      finish: buildFontCache,
    }),
};

/** matplotlib's GUI and web backends (each needs a toolkit the pack does not have). */
const GUI_BACKEND = /^backends\/(_backend_gtk|_backend_tk|_tkagg|backend_(cairo|gtk|macosx|nbagg|qt|tk|webagg|wx))|^backends\/(qt_compat|qt_editor|web_backend)/;

/** DejaVu Serif is the only face neither the default style nor mathtext's fallbacks load. */
const UNUSED_FONT = /^fonts\/ttf\/DejaVuSerif/;

async function pruneData(tree: string, detail: (text: string) => void): Promise<void> {
  await linkAlternatives(tree);
  const dist = join(tree, DIST);
  const dirs = await removeDirs(dist, (rel) => /(^|\/)(tests|testing\/tests|baseline_images)$/.test(rel) && !rel.startsWith('matplotlib/testing/'));
  // C headers and build helpers for compiling against numpy; nothing here has a compiler.
  for (const p of ['numpy/core/include', 'numpy/core/lib/npy-pkg-config', 'numpy/distutils', 'numpy/f2py', 'numpy/random/_examples', 'numpy/doc']) {
    await rm(join(dist, p), { recursive: true, force: true });
  }
  // python3-numpy ships a second copy of its core module for python3.11's own dist-packages,
  // which that version never imports (python3/dist-packages comes first).
  await rm(join(tree, `usr/lib/python${PYTHON_VERSION}/dist-packages`), { recursive: true, force: true });
  const mpl = join(dist, 'matplotlib');
  const gui = await removeFiles(mpl, (rel) => GUI_BACKEND.test(rel));
  await removeDirs(mpl, (rel) => GUI_BACKEND.test(rel));
  const data = join(tree, MPL_DATA);
  await removeFiles(data, (rel) => UNUSED_FONT.test(rel));
  for (const p of ['sample_data', 'images', 'plot_directive', 'kpsewhich.lua']) await rm(join(data, p), { recursive: true, force: true });
  await rm(join(tree, 'usr/share/matplotlib/matplotlib.conf'), { recursive: true, force: true });
  // debconf only serves tzdata's postinst (and is perl, which the pack has not).
  await removeFiles(join(tree, 'usr/bin'), (rel) => rel.startsWith('debconf'));
  for (const p of ['usr/sbin/dpkg-preconfigure', 'usr/sbin/dpkg-reconfigure', 'usr/share/debconf', 'usr/share/perl5', 'etc/debconf.conf']) {
    await rm(join(tree, p), { recursive: true, force: true });
  }
  await setAggBackend(tree);
  // Debian's matplotlib finds mpl-data in /usr/share when there is none beside it; a relative link
  // beside it means the same files on the build host (the font cache below) as in the guest.
  await symlink('../../../../share/matplotlib/mpl-data', join(mpl, 'mpl-data'));
  detail(`pruned ${dirs} test dirs, ${gui} GUI backend files`);
}

/**
 * What the postinsts of libblas3 and liblapack3 would make with update-alternatives: the sonames
 * numpy links against, pointing at the reference BLAS and LAPACK (OpenBLAS would be faster on big
 * matrices but is 10x their size).
 */
export const ALTERNATIVES: readonly (readonly [string, string])[] = [
  ['usr/lib/x86_64-linux-gnu/libblas.so.3', 'blas/libblas.so.3'],
  ['usr/lib/x86_64-linux-gnu/liblapack.so.3', 'lapack/liblapack.so.3'],
];

async function linkAlternatives(tree: string): Promise<void> {
  for (const [link, target] of ALTERNATIVES) {
    if (!(await lexists(join(tree, link)))) await symlink(target, join(tree, link));
  }
}

/** Debian's /etc/matplotlibrc asks for TkAgg; the pack has no Tk, and a headless default is Agg. */
export async function setAggBackend(tree: string): Promise<void> {
  const rc = join(tree, 'etc/matplotlibrc');
  const text = (await lexists(rc)) ? await readFile(rc, 'utf8') : '';
  const note = '# emberd: headless sandboxes draw with Agg (savefig to PNG, PDF, SVG)';
  const lines = text.split('\n').filter((l) => !/^\s*backend\s*:/.test(l) && l !== note);
  await writeFile(rc, [note, 'backend: Agg', ...lines].join('\n').replace(/\n*$/, '\n'));
}

/**
 * matplotlib scans its fonts on first import and caches the list in ~/.cache/matplotlib (under
 * TCG that scan takes seconds, and past 5 s it says "Matplotlib is building the font cache" on
 * stderr). Built here by the pack's own matplotlib, kept from the host's fonts. Fonts inside
 * mpl-data are stored relative to it (matplotlib's own encoding), so the list holds no build
 * path; sorted, so the file is the same on every build. Installed for root, whose home every exec
 * has.
 */
async function buildFontCache(tree: string, detail: (text: string) => void): Promise<void> {
  const cacheDir = join(tree, 'root/.cache/matplotlib');
  const scratch = `${tree}.mplconfig`; // where importing font_manager puts its own (host) scan
  await mkdir(cacheDir, { recursive: true });
  await mkdir(scratch, { recursive: true });
  const script = `
import sys, matplotlib.font_manager as fm
system_fonts = fm.findSystemFonts
fm.findSystemFonts = lambda fontpaths=None, fontext='ttf': [] if fontpaths is None else system_fonts(fontpaths, fontext)
m = fm.FontManager()
for fonts in (m.ttflist, m.afmlist):
    fonts.sort(key=lambda e: (e.fname, e.name, e.style, e.weight))
fm.json_dump(m, f"{sys.argv[1]}/fontlist-v{fm.FontManager.__version__}.json")
print(len(m.ttflist), len(m.afmlist))
`;
  try {
    const { cmd, args, env } = pythonHostCommand(tree, ['-c', script, cacheDir]);
    const { stdout } = await run(cmd, args, {
      env: { ...env, MPLCONFIGDIR: scratch, MPLBACKEND: 'Agg', MATPLOTLIBRC: join(tree, 'etc/matplotlibrc') },
    });
    const [ttf, afm] = stdout.toString().trim().split(' ');
    detail(`matplotlib font cache: ${ttf} TrueType, ${afm} AFM fonts`);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  for (const d of ['root/.cache', 'root/.cache/matplotlib']) await chmod(join(tree, d), 0o755);
}
