"""Shared by the tests (not test modules): generated data, tiny configs, tool runs."""
import os.path as osp

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
