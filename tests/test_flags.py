"""Tests for estimator_export.flags, on fresh FlagValues (never the global FLAGS)."""
from absl import flags
import pytest

import estimator_export as ee
from estimator_export import flags as export_flags


def _parse(*argv):
  fv = flags.FlagValues()
  export_flags.define_export_flags(fv)
  fv(['prog'] + list(argv))
  return fv


class TestExportFlags:

  def test_defaults(self):
    settings = export_flags.export_settings_from_flags(_parse())
    assert not settings.do_export
    assert settings.formats == ('raw', 'example') and settings.receiver_kind == 'combined'
    assert settings.options == ee.ExportOptions(keep=5)

  def test_values_become_options(self):
    settings = export_flags.export_settings_from_flags(_parse(
        '--do_export', '--export_dir=/tmp/m', '--export_formats=example',
        '--export_version=42', '--export_on_collision=bump', '--exports_to_keep=0',
        '--warmup_requests=0', '--novalidate_export', '--export_rtol=0.01',
        '--export_check_servable'))
    assert settings.do_export and settings.export_dir == '/tmp/m'
    assert settings.receiver_kind == 'example'
    opts = settings.options
    assert (opts.version, opts.on_collision, opts.keep, opts.warmup, opts.validate,
            opts.rtol, opts.check_servable) == (42, 'bump', None, False, False, 0.01, True)

  def test_keep_best_by(self):
    opts = export_flags.export_settings_from_flags(_parse(
        '--export_keep_best_by=accuracy', '--exports_to_keep=2')).options
    assert (opts.keep, opts.keep_best_by, opts.higher_is_better) == (2, 'accuracy', True)

  @pytest.mark.parametrize('argv,pattern', [
      (['--export_formats=raw,exampel'], r"unknown --export_formats entry: got 'exampel'.*Did you mean 'example'"),
      (['--export_version=latest'], r"bad --export_version: got 'latest'"),
      (['--do_export'], r'--do_export needs --export_dir'),
  ])
  def test_bad_values(self, argv, pattern):
    with pytest.raises(ee.ExportError, match=pattern):
      export_flags.export_settings_from_flags(_parse(*argv))

  def test_defining_twice_in_one_flag_values_fails_loudly(self):
    fv = flags.FlagValues()
    export_flags.define_export_flags(fv)
    with pytest.raises(flags.DuplicateFlagError):
      export_flags.define_export_flags(fv)

  def test_library_import_defines_no_global_flags(self):
    assert 'export_dir' not in flags.FLAGS
