"""README.md's example, run as a user would run it: a separate interpreter, the real daemon."""
import os
import subprocess
import sys
import unittest

import emberd
from helpers import SDK_ROOT, daemon_url, readme_example


class ReadmeExample(unittest.TestCase):
    def test_prints_what_the_readme_says(self):
        code, expected = readme_example()
        env = dict(os.environ, EMBERD_URL=daemon_url())
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, expected, r.stderr)

    def test_the_package_imported_is_the_one_under_test(self):
        # EMBERD_TEST_INSTALLED: the run with the package pip installed into a venv, not sdk/python.
        where = os.path.realpath(emberd.__file__)
        if os.environ.get("EMBERD_TEST_INSTALLED"):
            self.assertTrue(where.startswith(os.path.realpath(sys.prefix) + os.sep), f"{where} is not in the venv {sys.prefix}")
        else:
            self.assertEqual(os.path.dirname(where), str(SDK_ROOT / "emberd"))


if __name__ == "__main__":
    unittest.main()
