# cython: language_level=3, boundscheck=False, wraparound=False, binding=False
"""Compiled hot loop of `flakeguard.core.junit.ReportReader` (optional; see junit.py).

`scan_cases` consumes the parser's events while they are testcases of the suite being read
that it can read exactly as junit.py's pure-Python loop does, and merges each into the
suite's buffer. It hands back the first event it does not handle, so suites, testcases with
a ``status`` attribute, Surefire's flaky*/rerun* children and ``<properties>`` stay in
junit.py. An attempt is always built by junit.py's code, called from here with what the
elements hold (`ReportReader._failure`, `_skip`, `_passed_attempt`: outcome, duration,
message, signature). `drain_cases` turns a drained buffer into `CaseResult`s.

Mirrored rules (`tests/unit/test_junit_speedups.py` compares both loops; every other JUnit
test runs on both): a testcase element without a namespace whose parent is `cases_parent`;
its merge key is (``classname`` if present else ``class``, ``name``, ``file``), a missing
attribute giving None; its result is its first ``failure``/``error`` child, else its first
``skipped`` child, else a pass (children are elements without a namespace; comments, PIs,
text and other elements are ignored), and its children are cleared once read.

Attributes are read from libxml2's nodes through lxml's public C API (no Python lists or
element proxies per testcase), which is most of the gain. A passing case's shared attempt is
found by the raw bytes of its ``time`` value (`_passed`), a suite's buffer starts with room
for as many cases as the last suite had (`new_buffer`), and a failure's signature text is
cut and filtered in one pass (`failure_signature`).
"""

cimport lxml.includes.etreepublic as cetree
from cpython.mem cimport PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport strcmp, strlen
from lxml.includes cimport tree


cdef extern from "Python.h":
    ctypedef struct PyObject
    ctypedef struct PyTypeObject
    PyObject* PyType_GenericAlloc(PyTypeObject* type, Py_ssize_t items) except NULL
    PyObject* PyDict_SetDefault(object mapping, object key, object default) except NULL
    void PyTuple_SET_ITEM(PyObject* tuple, Py_ssize_t index, PyObject* item)
    void Py_INCREF(object item)
    void Py_DECREF(object item)
    bint PyUnicode_IS_ASCII(object text)
    int PyUnicode_CompareWithASCIIString(object text, const char* string)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    Py_UCS4 PyUnicode_READ_CHAR(object text, Py_ssize_t index)
    bint Py_UNICODE_ISSPACE(Py_UCS4 ch)


cetree.import_lxml__etree()


cdef inline object _value(tree.xmlNode* c_node, tree.xmlAttr* c_attr, object previous):
    """The attribute's value as lxml gives it; `previous` itself when equal and ASCII.

    A value the parser stored as one text node is decoded from libxml2's UTF-8 directly
    (lxml's `attributeValue` looks the attribute up again and copies it first); anything
    else goes through lxml. Reusing `previous` (a suite's classname, file) saves the decode
    and lets the merge key's hash be the cached one.
    """
    cdef tree.xmlNode* text = c_attr.children
    cdef const char* content
    if text is NULL or text.next is not NULL or text.type != tree.XML_TEXT_NODE:
        return cetree.attributeValue(c_node, c_attr)
    content = <const char*>text.content
    if content is NULL:
        return cetree.attributeValue(c_node, c_attr)
    if (
        previous is not None
        and PyUnicode_IS_ASCII(previous)
        and PyUnicode_CompareWithASCIIString(previous, content) == 0
    ):
        return previous
    return PyUnicode_DecodeUTF8(content, strlen(content), NULL)


cdef inline object _stripped(object text):
    """`text.strip()`, or "" for None/empty, without a method call when nothing to strip."""
    cdef Py_ssize_t length
    if not text:
        return ""
    length = PyUnicode_GET_LENGTH(text)
    if Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(text, 0)) or Py_UNICODE_ISSPACE(
        PyUnicode_READ_CHAR(text, length - 1)
    ):
        return (<str>text).strip()
    return text


cdef enum ChildKind:
    OTHER = 0
    FAILURE = 1
    ERROR = 2
    SKIPPED = 3
    FOR_PYTHON = 4  # flaky*/rerun* attempts and <properties>: junit.py reads those


cdef ChildKind _child_kind(tree.xmlNode* child):
    """What a testcase's child is to `ReportReader._attempts_of` (elements without a namespace)."""
    cdef const char* name
    if child.type != tree.XML_ELEMENT_NODE or child.ns is not NULL:
        return OTHER
    name = <const char*>child.name
    if strcmp(name, b"failure") == 0:
        return FAILURE
    if strcmp(name, b"error") == 0:
        return ERROR
    if strcmp(name, b"skipped") == 0:
        return SKIPPED
    if (
        strcmp(name, b"flakyFailure") == 0
        or strcmp(name, b"flakyError") == 0
        or strcmp(name, b"rerunFailure") == 0
        or strcmp(name, b"rerunError") == 0
        or strcmp(name, b"properties") == 0
    ):
        return FOR_PYTHON
    return OTHER


cdef tuple _type_and_message(tree.xmlNode* c_node):
    """The ``type`` and ``message`` attributes of a result element (None when missing)."""
    cdef tree.xmlAttr* c_attr = c_node.properties
    cdef object type_attr = None, message_attr = None
    while c_attr is not NULL:
        if c_attr.ns is NULL:
            if strcmp(<const char*>c_attr.name, b"message") == 0:
                message_attr = _value(c_node, c_attr, None)
            elif strcmp(<const char*>c_attr.name, b"type") == 0:
                type_attr = _value(c_node, c_attr, None)
        c_attr = c_attr.next
    return type_attr, message_attr


cdef enum:
    _TIME_SLOTS = 8192  # a power of two
    _TIME_SHIFT = 51  # 64 - log2(_TIME_SLOTS)


cdef struct _TimeSlot:
    unsigned long long raw  # the attribute's bytes, zero-padded (never holds a NUL)
    PyObject* attempt  # a reference owned by the table; NULL = an empty slot


# Passing attempts by the raw bytes of their ``time`` attribute, in front of a reader's
# `passed_cache` (keyed by the decoded text). One table for the process: the attempt of a
# passing case depends on its time text alone (`ReportReader._passed_attempt`), so an entry
# holds for every reader, and no reader pays for a table of its own.
cdef _TimeSlot _PASSED_TIMES[_TIME_SLOTS]


cdef object _passed(
    tree.xmlNode* c_node, tree.xmlAttr* time_attr, dict passed_cache, passed_attempt
):
    """The shared passing attempt of a testcase (`passed_attempt` of its time text).

    A ``time`` value that is one text node of at most 8 bytes, the usual case ("0.012"),
    is looked up in `_PASSED_TIMES` (direct-mapped) by its bytes, without decoding or
    hashing a string. A miss, or any other value, takes the decoded text to `passed_cache`
    and `passed_attempt`, so the attempt is always theirs (one text node's bytes decode to
    one string), and a miss refills the slot.
    """
    cdef tree.xmlNode* text
    cdef const unsigned char* content = NULL
    cdef unsigned long long raw = 0
    cdef Py_ssize_t length = 0
    cdef _TimeSlot* slot = NULL
    cdef object time_text, attempt
    if time_attr is NULL:
        attempt = passed_cache.get(None)
        return attempt if attempt is not None else passed_attempt(None)
    text = time_attr.children
    if text is not NULL and text.next is NULL and text.type == tree.XML_TEXT_NODE:
        content = <const unsigned char*>text.content
    if content is not NULL:
        while length < 8 and content[length] != 0:
            raw |= (<unsigned long long>content[length]) << (8 * length)
            length += 1
        if content[length] == 0:
            slot = &_PASSED_TIMES[(raw * 0x9E3779B97F4A7C15ULL) >> _TIME_SHIFT]
            if slot.attempt is not NULL and slot.raw == raw:
                return <object>slot.attempt
    time_text = _value(c_node, time_attr, None)
    attempt = passed_cache.get(time_text)
    if attempt is None:
        attempt = passed_attempt(time_text)
    if slot is not NULL:
        Py_INCREF(attempt)
        if slot.attempt is not NULL:
            Py_DECREF(<object>slot.attempt)
        slot.raw = raw
        slot.attempt = <PyObject*>attempt
    return attempt


cdef extern from *:
    """
    static PyObject* flakeguard_presized_dict(Py_ssize_t entries) {
    #if PY_VERSION_HEX < 0x030D0000
        return _PyDict_NewPresized(entries);
    #else
        return PyDict_New();
    #endif
    }
    """
    dict flakeguard_presized_dict(Py_ssize_t entries)


def new_buffer(Py_ssize_t entries):
    """An empty dict with room for `entries` keys (a suite's buffer sized like the last
    suite's: growing one from empty costs ~5 resizes of 14k instructions each)."""
    if entries <= 5:
        return {}
    return flakeguard_presized_dict(min(entries, 4096))


def scan_cases(
    events,
    cetree._Element cases_parent,
    dict buffer,
    dict passed_cache,
    passed_attempt,
    failure,
    skip,
    failed_outcome,
    error_outcome,
    Py_ssize_t budget,
):
    """Consume testcases of `cases_parent` (at most `budget`, at least one) while they are
    ones this loop reads exactly as junit.py does.

    Returns (element, added, counted):
    - (None, added, False): the events are exhausted;
    - (elem, added, True): the budget is spent; `elem`, the last case, was merged (the caller
      runs its clean-up check with it);
    - (elem, added, False): `elem` is not such a case; the caller handles it.
    """
    cdef cetree._Element elem
    cdef tree.xmlNode* c_node
    cdef tree.xmlNode* c_parent = cases_parent._c_node
    cdef tree.xmlNode* child
    cdef tree.xmlNode* main_node
    cdef tree.xmlNode* skipped_node
    cdef tree.xmlAttr* c_attr
    cdef const char* attr_name
    cdef char first
    cdef tree.xmlAttr* time_attr
    cdef Py_ssize_t added = 0, size
    cdef bint has_classname, has_status, rich
    cdef ChildKind kind, main_kind
    cdef object class_name, class_attr, name, file, key, attempt, previous
    cdef object last_class = None, last_file = None
    if budget < 1:
        budget = 1
    for _event, item in events:
        elem = <cetree._Element?>item
        c_node = elem._c_node
        if (
            c_node.parent is not c_parent
            or c_node.ns is not NULL
            or strcmp(<const char*>c_node.name, b"testcase") != 0
        ):
            return elem, added, False
        class_name = class_attr = name = file = None
        time_attr = NULL
        has_classname = has_status = False
        c_attr = c_node.properties
        while c_attr is not NULL:
            if c_attr.ns is NULL:
                # One string comparison per attribute: its first letter picks the candidate.
                attr_name = <const char*>c_attr.name
                first = attr_name[0]
                if first == b"n":
                    if strcmp(attr_name, b"name") == 0:
                        name = _value(c_node, c_attr, None)
                elif first == b"c":
                    if strcmp(attr_name, b"classname") == 0:
                        class_name = last_class = _value(c_node, c_attr, last_class)
                        has_classname = True
                    elif strcmp(attr_name, b"class") == 0:
                        class_attr = last_class = _value(c_node, c_attr, last_class)
                elif first == b"t":
                    if strcmp(attr_name, b"time") == 0:
                        time_attr = c_attr
                elif first == b"f":
                    if strcmp(attr_name, b"file") == 0:
                        file = last_file = _value(c_node, c_attr, last_file)
                elif first == b"s":
                    if strcmp(attr_name, b"status") == 0:
                        has_status = True
                        break
            c_attr = c_attr.next
        if has_status:
            return elem, added, False
        # A testcase with children: its result element decides, as in `_attempts_of`.
        main_node = skipped_node = NULL
        main_kind = OTHER
        rich = cetree.hasChild(c_node)
        if rich:
            child = c_node.children
            while child is not NULL:
                kind = _child_kind(child)
                if kind == FOR_PYTHON:
                    return elem, added, False
                if kind == FAILURE or kind == ERROR:
                    if main_node is NULL:
                        main_node, main_kind = child, kind
                elif kind == SKIPPED and skipped_node is NULL:
                    skipped_node = child
                child = child.next
        if main_node is not NULL:
            type_attr, message_attr = _type_and_message(main_node)
            attempt = failure(
                failed_outcome if main_kind == FAILURE else error_outcome,
                _value(c_node, time_attr, None) if time_attr is not NULL else None,
                type_attr,
                message_attr,
                cetree.textOf(main_node),
            )
        elif skipped_node is not NULL:
            type_attr, message_attr = _type_and_message(skipped_node)
            attempt = skip(
                _value(c_node, time_attr, None) if time_attr is not NULL else None,
                type_attr,
                message_attr,
                cetree.textOf(skipped_node),
            )
        else:
            attempt = _passed(c_node, time_attr, passed_cache, passed_attempt)
        if rich:
            # Children (output, stack traces) can be large: free them now.
            elem.clear(keep_tail=False)
        key = (class_name if has_classname else class_attr, name, file)
        # One lookup for the common case, a key not seen yet in this suite (attempts are
        # shared objects, so a grown dict, not the value returned, tells an insertion).
        size = len(buffer)
        previous = <object>PyDict_SetDefault(buffer, key, attempt)
        if len(buffer) != size:
            pass
        elif type(previous) is list:
            (<list>previous).append(attempt)
        else:
            buffer[key] = [previous, attempt]
        added += 1
        if added >= budget:
            return elem, added, True
    return None, added, False


def drain_cases(
    dict buffer,
    dict case_properties,
    str suite,
    default_file,
    tuple env,
    dict counts,
    normalise_file,
    merged_attempts,
    case_type,
):
    """A drained suite buffer as `CaseResult`s in buffer order, and the attempts counted.

    Mirrors `ReportReader._drain`: a single `Attempt` is counted here, a list goes to
    `merged_attempts(list) -> tuple` (which counts it); `case_type` is `CaseResult`, built
    with `tuple.__new__` in its field order (suite, class_name, name, file, attempts,
    properties).
    """
    cdef list cases = []
    cdef Py_ssize_t attempts_seen = 0, run = 0
    cdef object run_outcome = None
    cdef tuple attempts
    cdef object class_name, name, raw_file, outcome, properties
    for key, value in buffer.items():
        class_name, name, raw_file = <tuple>key
        if type(value) is list:
            attempts = merged_attempts(value)
            attempts_seen += len(attempts)
        else:
            outcome = (<tuple>value)[0]
            # Counted in runs of one outcome: one dict update per run, not per case.
            if outcome is not run_outcome:
                if run:
                    counts[run_outcome] += run
                run_outcome = outcome
                run = 0
            run += 1
            attempts = (value,)
            attempts_seen += 1
        if case_properties:
            properties = case_properties.get(key, env)
        else:
            properties = env
        cases.append(
            _case(
                case_type,
                suite,
                _stripped(class_name),
                _stripped(name),
                normalise_file(raw_file) if raw_file else default_file,
                attempts,
                properties,
            )
        )
    if run:
        counts[run_outcome] += run
    return cases, attempts_seen


cdef inline object _case(
    object case_type, object suite, object class_name, object name, object file,
    object attempts, object properties,
):
    """`tuple.__new__(case_type, (...))` without the intermediate tuple and method lookup.

    `case_type` is a named tuple class (no instance dict: the layout of a tuple), allocated
    as `tuple_subtype_new` does and filled with new references.
    """
    cdef PyObject* case = PyType_GenericAlloc(<PyTypeObject*>case_type, 6)
    _put(case, 0, suite)
    _put(case, 1, class_name)
    _put(case, 2, name)
    _put(case, 3, file)
    _put(case, 4, attempts)
    _put(case, 5, properties)
    result = <object>case  # a new reference of its own...
    Py_DECREF(result)  # ...so drop the one the allocation returned
    return result


cdef inline void _put(PyObject* tuple, Py_ssize_t index, object item):
    Py_INCREF(item)
    PyTuple_SET_ITEM(tuple, index, <PyObject*>item)


cdef extern from "Python.h":
    int PyUnicode_KIND(object text)
    int PyUnicode_1BYTE_KIND
    void* PyUnicode_DATA(object text)
    object PyUnicode_Substring(object text, Py_ssize_t start, Py_ssize_t end)
    object PyBytes_FromStringAndSize(const char* data, Py_ssize_t size)
    char* PyBytes_AS_STRING(object data)
    Py_ssize_t PyBytes_GET_SIZE(object data)
    object PyUnicode_AsEncodedString(object text, const char* encoding, const char* errors)


# Per Latin-1 code point: does `str.splitlines` break there (\n \v \f \r \x1c \x1d \x1e
# U+0085)? Per UTF-8 byte: 1 = a digit (dropped), 2 = a hint of a volatile part ("/", "\\",
# "-"; "0" is 1 and checked for "0x"). All of them are ASCII, so never inside a multibyte
# sequence. `_STACK_CLASS` joins both for the one pass over a stack; it is derived from
# Python's own `splitlines` and `isspace`, the rules junit.py applies.
cdef unsigned char _LINE_BREAK[256]
cdef unsigned char _BYTE_CLASS[256]
cdef unsigned char _STACK_CLASS[256]
for _code in range(48, 58):
    _BYTE_CLASS[_code] = 1
for _code in (47, 92, 45):
    _BYTE_CLASS[_code] = 2


cdef enum StackChar:
    COPIED = 0  # ASCII, kept as it is
    DIGIT = 1  # dropped ("0" may start a "0x" hint)
    HINT = 2
    BREAK = 3  # ends a line
    SPACE = 4  # stripped at the ends of a line, kept inside it
    WIDE = 5  # above ASCII: two UTF-8 bytes


for _code in range(256):
    if len(("a" + chr(_code) + "b").splitlines()) > 1:
        _LINE_BREAK[_code] = 1
        _STACK_CLASS[_code] = BREAK
    elif chr(_code).isspace():
        _STACK_CLASS[_code] = SPACE
    elif _code >= 0x80:
        _STACK_CLASS[_code] = WIDE
    else:
        _STACK_CLASS[_code] = _BYTE_CLASS[_code]  # COPIED, DIGIT or HINT


cdef list _stack_lines(object stack, Py_ssize_t max_chars, Py_ssize_t max_lines):
    """The first `max_lines` non-blank stripped lines of `stack[:max_chars]` (Latin-1 text;
    the blank piece between "\\r" and "\\n" is dropped like any blank line)."""
    cdef list lines = []
    cdef const unsigned char* chars = <const unsigned char*>PyUnicode_DATA(stack)
    cdef Py_ssize_t length = min(PyUnicode_GET_LENGTH(stack), max_chars)
    cdef Py_ssize_t index = 0, start = 0, end
    if max_lines <= 0:
        return lines
    while True:
        while index < length and not _LINE_BREAK[chars[index]]:
            index += 1
        end = index
        while start < end and Py_UNICODE_ISSPACE(chars[start]):
            start += 1
        while end > start and Py_UNICODE_ISSPACE(chars[end - 1]):
            end -= 1
        if end > start:
            lines.append(PyUnicode_Substring(stack, start, end))
            if len(lines) >= max_lines:
                break
        if index >= length:
            break
        index += 1
        start = index
    return lines


cdef object _single_spaced(object message):
    """`" ".join((message or "").split())`, without the split when nothing changes."""
    cdef const unsigned char* chars
    cdef Py_ssize_t length, index
    cdef bint after_space = True  # a space first is a change
    if not message:
        return ""
    if PyUnicode_KIND(message) == PyUnicode_1BYTE_KIND:
        chars = <const unsigned char*>PyUnicode_DATA(message)
        length = PyUnicode_GET_LENGTH(message)
        for index in range(length):
            if chars[index] == 32:
                if after_space:
                    break
                after_space = True
            elif Py_UNICODE_ISSPACE(chars[index]):
                break
            else:
                after_space = False
        else:
            if not after_space:
                return message
    return " ".join((<str>message).split())


cdef unsigned char* _SCRATCH = NULL
cdef Py_ssize_t _SCRATCH_SIZE = 0


cdef unsigned char* _scratch(Py_ssize_t size) except NULL:
    """A buffer of at least `size` bytes, reused by every call (the GIL is held throughout;
    a fresh allocation per failure cost more than the digit loop)."""
    global _SCRATCH, _SCRATCH_SIZE
    cdef void* grown
    if size > _SCRATCH_SIZE:
        grown = PyMem_Realloc(_SCRATCH, size)
        if grown is NULL:
            raise MemoryError()
        _SCRATCH = <unsigned char*>grown
        _SCRATCH_SIZE = size
    return _SCRATCH


cdef Py_ssize_t _digitless(
    const unsigned char* data, Py_ssize_t size, unsigned char* out, Py_ssize_t kept
):
    """Append `data` minus its digits to `out` at `kept`; -1 on a hint of a volatile part."""
    cdef Py_ssize_t index
    cdef unsigned char ch, byte_class
    for index in range(size):
        ch = data[index]
        byte_class = _BYTE_CLASS[ch]
        if byte_class == 0:
            out[kept] = ch
            kept += 1
        elif byte_class == 2 or (ch == 48 and index + 1 < size and data[index + 1] == 120):
            return -1
    return kept


def failure_signature(
    str kind,
    failure_type,
    message,
    stack,
    Py_ssize_t max_chars,
    Py_ssize_t max_lines,
    python_signature,
    masked_bytes,
    blake2b,
):
    """`junit.failure_signature` with its text work in C, for a stack of Latin-1 text.

    Any other stack goes to `python_signature` (junit.py's), and so does masking: when the
    text holds a hint of a volatile part ("/", "\\", "-", "0x"), `masked_bytes` (junit.py's
    `_masked_bytes`) builds the hashed bytes. Otherwise the head (kind, type, message) and
    the first `max_lines` non-blank stripped lines of `stack[:max_chars]` are written as
    UTF-8 minus their digits in one pass over the stack, as junit.py's join, encode and
    translate would. `tests/unit/test_junit_speedups.py` compares the two.
    """
    cdef const unsigned char* chars
    cdef const unsigned char* data
    cdef unsigned char* out
    cdef unsigned char ch, char_class
    cdef Py_ssize_t length = 0, index, taken = 0, kept, line_end
    cdef bint in_line
    cdef object head, raw
    if stack and PyUnicode_KIND(stack) != PyUnicode_1BYTE_KIND:
        return python_signature(kind, failure_type, message, stack)
    head = "\n".join((kind, failure_type or "", _single_spaced(message)))
    raw = PyUnicode_AsEncodedString(head, b"utf-8", b"surrogatepass")
    if stack and max_lines > 0:
        length = min(PyUnicode_GET_LENGTH(stack), max_chars)
    # Every kept stack character takes at most 2 bytes (Latin-1), every line one "\n".
    out = _scratch(PyBytes_GET_SIZE(raw) + 3 * length)
    kept = _digitless(
        <const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), out, 0
    )
    if kept >= 0 and length:
        # One pass: a line's "\n" is written at its first kept character, and `kept` goes
        # back to after its last non-space one when it ends (strip); a blank line writes
        # nothing and is not counted.
        chars = <const unsigned char*>PyUnicode_DATA(stack)
        in_line = False
        line_end = kept
        for index in range(length):
            ch = chars[index]
            char_class = _STACK_CLASS[ch]
            if char_class == SPACE:
                if in_line:
                    if ch >= 0x80:
                        out[kept] = 0xC0 | (ch >> 6)
                        out[kept + 1] = 0x80 | (ch & 0x3F)
                        kept += 2
                    else:
                        out[kept] = ch
                        kept += 1
                continue
            if char_class == BREAK:
                if in_line:
                    kept = line_end
                    in_line = False
                    taken += 1
                    if taken >= max_lines:
                        break
                continue
            if not in_line:
                out[kept] = 10
                kept += 1
                in_line = True
            if char_class == COPIED:
                out[kept] = ch
                kept += 1
            elif char_class == WIDE:
                out[kept] = 0xC0 | (ch >> 6)
                out[kept + 1] = 0x80 | (ch & 0x3F)
                kept += 2
            elif char_class == HINT or (
                ch == 48 and index + 1 < length and chars[index + 1] == 120
            ):
                kept = -1
                break
            line_end = kept
        else:
            if in_line:
                kept = line_end
    if kept < 0:
        parts = [head]
        if stack:
            parts.extend(_stack_lines(stack, max_chars, max_lines))
        return blake2b(masked_bytes("\n".join(parts)), digest_size=16).hexdigest()
    return blake2b(PyBytes_FromStringAndSize(<char*>out, kept), digest_size=16).hexdigest()
