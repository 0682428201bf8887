# Appended to solution.py by the tests: a hostile submission.
# At import, writes well-formed messages of the wrong shape to the grader's pipe: a fake "ready"
# full of wrong types, then a fake reply. The grader must not trip over them.
import json
import os
import struct
import sys


def _message(value):
    head = json.dumps({"h": value, "a": []}).encode()
    body = struct.pack(">I", len(head)) + head
    return struct.pack(">Q", len(body)) + body


os.write(int(sys.argv[2]), _message({"status": "ready", "import_error": 5, "defined": 7,
                                     "violations": 3, "replies": "all passed"}))
os.write(int(sys.argv[2]), _message({"replies": [{"status": "ok", "value": {"$a": 0},
                                                  "modified": 9}, 1], "violations": {}}))
