"""Writing what a target renders: YAML with comments, files into a directory, or one stream.

A target renders `Files`: relative path -> text, or a `CopyTree` (a directory copied
from the export, for the Dockerfile's build context). Kubernetes and KServe render
one YAML document per file, so they can also go to stdout as one stream
(`kubectl apply -f -`).
"""
import dataclasses
import json
import os
import posixpath
import shutil
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple, Union


@dataclasses.dataclass(frozen=True)
class CopyTree:
  """A directory to copy (through tf.io.gfile, so gs:// works too) to the file's path.

  Only the top-level entries named in `include` are copied (all when None); what was
  at the destination before is removed first.
  """
  source: str
  include: Optional[Tuple[str, ...]] = None


Files = Dict[str, Union[str, CopyTree]]


def _yaml_module():
  try:
    import yaml  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return yaml


def dump_yaml(document: Mapping[str, Any], header: str = '') -> str:
  """`document` as block YAML (multi-line strings as `|` blocks), after `header` comments.

  Without PyYAML the document is written as JSON, which is YAML too.
  """
  comment = ''.join(f'# {line}'.rstrip() + '\n' for line in header.splitlines())
  yaml = _yaml_module()
  if yaml is None:
    return comment + json.dumps(document, indent=2) + '\n'

  class Dumper(yaml.SafeDumper):  # pylint: disable=too-many-ancestors
    pass

  def represent_str(dumper, value):
    style = '|' if '\n' in value else None
    return dumper.represent_scalar('tag:yaml.org,2002:str', value, style=style)

  Dumper.add_representer(str, represent_str)
  return comment + yaml.dump(document, Dumper=Dumper, sort_keys=False,
                             default_flow_style=False, width=100)


def stream(files: Files) -> str:
  """The YAML files as one multi-document stream, in order."""
  texts = []
  for path, content in files.items():
    if not isinstance(content, str):
      raise TypeError(f'{path} is a directory, not a YAML document')
    texts.append(content if content.endswith('\n') else content + '\n')
  return '---\n'.join(texts)


def _write_text(path: str, text: str) -> None:
  directory = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(prefix='.deploy.', dir=directory)
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # Readable by the server's user in a container.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _copy_tree(tree: CopyTree, destination: str) -> int:
  """Copies `tree` (local or any tf.io.gfile URI) to a fresh local `destination`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if os.path.exists(destination):
    shutil.rmtree(destination)
  os.makedirs(destination)
  source = tree.source.rstrip('/')
  tops = tree.include if tree.include is not None else [
      n.rstrip('/') for n in tf.io.gfile.listdir(source)]
  count = 0
  for top in tops:
    top_source = posixpath.join(source, top)
    if not tf.io.gfile.isdir(top_source):
      tf.io.gfile.copy(top_source, os.path.join(destination, top))
      count += 1
      continue
    for directory, _, names in tf.io.gfile.walk(top_source):
      relative = posixpath.relpath(directory, source)
      target = os.path.join(destination, *relative.split('/'))
      os.makedirs(target, exist_ok=True)
      for name in names:
        tf.io.gfile.copy(posixpath.join(directory, name), os.path.join(target, name))
        count += 1
  return count


def write_files(files: Files, output_dir: str) -> Dict[str, int]:
  """Writes every file under output_dir (text atomically; trees replaced whole).

  Returns:
    relative path -> bytes written (text) or files copied (trees).
  """
  written = {}
  root = os.path.abspath(output_dir)
  for relative, content in files.items():
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(content, CopyTree):
      written[relative] = _copy_tree(content, path)
    else:
      _write_text(path, content)
      written[relative] = len(content.encode('utf-8'))
  return written
