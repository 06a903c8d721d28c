#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Man pages from their sources, so they never drift: section 3 (one page per public function) and
# libuffd(7) from Doxygen's XML of <uffd.h>, section 1 from each installed tool's --help.
"""usage: gen-man.py --xml DIR --out DIR --version V [--tool NAME=BINARY[=SOURCE]]...

Writes OUT/man3/<function>.3, OUT/man7/libuffd.7 and OUT/man1/<tool>.1, after removing every
page a previous run left in OUT, so a function or tool that is gone leaves no stale page.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

MANUAL = 'libuffd Manual'

# What a bare code in a return sentence ("-EMFILE, -ENFILE") means, when the header says no more.
ERRNO_TEXT = {
    'EINVAL': 'Invalid argument.',
    'ENOMEM': 'Out of memory.',
    'EMFILE': 'The per-process limit on open file descriptors has been reached.',
    'ENFILE': 'The system-wide limit on open files has been reached.',
    'EINTR': 'Interrupted by a signal.',
    'ESRCH': 'The process behind the context has exited.',
    'ENOSYS': 'The kernel lacks the system call.',
    'EBUSY': 'Busy.',
    'EPERM': 'Not permitted.',
    'EBADF': 'Not an open file descriptor.',
    'ENOSPC': 'A kernel limit was reached.',
}

# Pages of other manuals that every libuffd page may point to.
KERNEL_PAGES = ['userfaultfd(2)', 'ioctl_userfaultfd(2)']


def die(msg):
    sys.stderr.write('gen-man.py: %s\n' % msg)
    sys.exit(1)


# ---- roff ----

def esc(text):
    """Escape plain text for roff: backslashes, and minus signs that start a word (options,
    negative error codes), which must stay ASCII minus when rendered."""
    text = text.replace('\\', '\\e')
    text = re.sub(r'(?<![\w-])-(?=[\w-])', r'\\-', text)
    text = re.sub(r'(?<=\\-)-', r'\\-', text)
    return text


def guard(line):
    """A text line must not start with a control character."""
    return '\\&' + line if line[:1] in ('.', "'") else line


def norm_ws(text):
    return re.sub(r'\s+', ' ', text)


class Doc:
    """The Doxygen XML of the header, indexed."""

    def __init__(self, xmldir):
        self.dir = xmldir
        index = ET.parse(os.path.join(xmldir, 'index.xml')).getroot()
        self.groups = []      # (name, compounddef), in header order
        self.structs = {}     # name -> compounddef
        self.funcs = {}       # name -> (memberdef, group compounddef)
        self.typedefs = {}    # name -> memberdef
        self.enums = {}       # name -> memberdef
        self.defines = {}     # name -> memberdef
        self.file = None      # the uffd.h file compound
        self.pages = {}       # id -> title
        self.guide_refs = []  # titles of the guide pages the page being written refers to
        for c in index.findall('compound'):
            kind, refid = c.get('kind'), c.get('refid')
            if kind in ('group', 'struct', 'file', 'page'):
                cd = ET.parse(os.path.join(xmldir, refid + '.xml')).getroot().find('compounddef')
                if kind == 'group':
                    self.groups.append((cd.findtext('compoundname'), cd))
                elif kind == 'struct':
                    self.structs[cd.findtext('compoundname')] = cd
                elif kind == 'file' and cd.findtext('compoundname') == 'uffd.h':
                    self.file = cd
                elif kind == 'page':
                    self.pages[refid] = cd.findtext('title') or cd.findtext('compoundname')
        if self.file is None:
            die('no uffd.h in %s' % xmldir)
        self.groups.sort(key=lambda g: int(first_line(g[1])))
        for _, g in self.groups:
            for m in g.iter('memberdef'):
                name = m.findtext('name')
                kind = m.get('kind')
                if kind == 'function':
                    self.funcs[name] = (m, g)
                elif kind == 'typedef':
                    self.typedefs[name] = m
                elif kind == 'enum':
                    self.enums[name] = m
                elif kind == 'define':
                    self.defines[name] = m
        # Members declared outside any group are still public: find them in the file.
        for m in self.file.iter('memberdef'):
            name = m.findtext('name')
            if m.get('kind') == 'function' and name not in self.funcs:
                self.funcs[name] = (m, None)


    def guide_page(self, refid):
        """The title of the guide page @refid is, or holds a section of; None if neither."""
        if not refid:
            return None
        if refid in self.pages:
            return self.pages[refid]
        page = refid.split('_1', 1)[0]
        return self.pages.get(page) if page != refid else None


def guide_see_also(doc):
    """The closing lines of SEE ALSO: the guide pages the text referred to."""
    if not doc.guide_refs:
        return []
    titles = ', '.join('\\fI%s\\fR' % esc(t) for t in doc.guide_refs)
    return ['.PP', 'The libuffd guide, built in HTML with the reference (the \\fBdocs\\fR '
            'target): %s.' % titles]


def first_line(cd):
    lines = [int(loc.get('line')) for loc in cd.iter('location') if loc.get('line')]
    return min(lines) if lines else 0


class Writer:
    """Renders Doxygen's description markup as roff. Parameter names are set in italics, code
    and function names in bold."""

    def __init__(self, doc, params=()):
        self.doc = doc
        self.params = set(params)
        self.out = []   # finished lines
        self.buf = ''   # the text line being built
        self.pending_pp = False

    # -- inline --
    def inline(self, el):
        """Text of an element's content, formatted, with no block structure."""
        s = esc(el.text or '') if el.text else ''
        for child in el:
            s += self.inline_child(child)
            if child.tail:
                s += esc(child.tail)
        return s

    def inline_child(self, c):
        tag = c.tag
        if tag == 'computeroutput':
            text = ''.join(c.itertext())
            font = 'I' if text in self.params else 'B'
            return '\\f%s%s\\fR' % (font, esc(text))
        if tag == 'bold':
            return '\\fB%s\\fR' % esc(''.join(c.itertext()))
        if tag in ('emphasis', 'parametername'):
            return '\\fI%s\\fR' % esc(''.join(c.itertext()))
        if tag == 'ref':
            text = ''.join(c.itertext())
            page = self.doc.guide_page(c.get('refid'))
            if page:
                # A guide page or one of its sections: named here, listed under SEE ALSO.
                if page not in self.doc.guide_refs:
                    self.doc.guide_refs.append(page)
                return '\\fI%s\\fR' % esc(text)
            if re.fullmatch(r'uffd_\w+\(\)', text):
                return '\\fB%s\\fR()' % esc(text[:-2])
            return '\\fB%s\\fR' % esc(text)
        if tag == 'ulink':
            text = ''.join(c.itertext())
            url = c.get('url')
            return esc(text) if text == url else '%s <%s>' % (esc(text), esc(url))
        if tag == 'ndash':
            return '\\(en'
        if tag == 'mdash':
            return '\\(em'
        if tag == 'linebreak':
            return '\n.br\n'
        if tag in ('anchor', 'image', 'htmlonly', 'latexonly', 'rtfonly', 'docbookonly',
                   'xmlonly', 'indexentry'):
            return ''
        if tag == 'manonly':
            return c.text or ''
        return self.inline(c)

    # -- blocks --
    def emit(self, line):
        self.out.append(line)

    def flush(self):
        text = norm_ws(self.buf).strip()
        self.buf = ''
        if not text:
            return
        if self.pending_pp:
            self.emit('.PP')
            self.pending_pp = False
        for line in text.split('\n'):
            line = line.strip()
            if line:
                self.emit(line if line.startswith('.br') else guard(line))

    def para_break(self):
        self.flush()
        self.pending_pp = bool(self.out)

    def block(self, el, skip=()):
        """Render the block content of a description or para."""
        if el.text and el.text.strip():
            self.buf += esc(el.text)
        for c in el:
            if c in skip:
                pass
            elif c.tag == 'para':
                self.para_break()
                self.block(c, skip)
                self.para_break()
            elif c.tag in ('itemizedlist', 'orderedlist'):
                self.list(c, c.tag == 'orderedlist', skip)
            elif c.tag in ('parameterlist',):
                pass
            elif c.tag == 'simplesect':
                if c.get('kind') in ('note', 'warning', 'attention', 'remark'):
                    self.para_break()
                    self.buf += '\\fB%s:\\fR ' % c.get('kind').capitalize()
                    self.block(c, skip)
                    self.para_break()
            elif c.tag in ('programlisting', 'verbatim'):
                self.flush()
                self.emit('.PP')
                self.emit('.nf')
                self.emit('.RS 4')
                lines = ([''.join(cl.itertext()) for cl in c.findall('codeline')]
                         if c.tag == 'programlisting' else (c.text or '').split('\n'))
                for line in lines:
                    self.emit(guard(esc(line)))
                self.emit('.RE')
                self.emit('.fi')
                self.pending_pp = True
            elif c.tag == 'heading':
                self.flush()
                self.emit('.SS %s' % esc(''.join(c.itertext())))
            else:
                self.buf += self.inline_child(c)
            if c.tail and c.tail.strip():
                self.buf += esc(c.tail)
            elif c.tail and self.buf:
                self.buf += ' '

    def list(self, el, ordered, skip=()):
        self.flush()
        for n, item in enumerate(el.findall('listitem'), 1):
            self.emit('.IP %s 4' % ('%d.' % n if ordered else '\\(bu'))
            self.pending_pp = False
            self.block_in_item(item, skip)
        self.pending_pp = True

    def block_in_item(self, item, skip):
        first = True
        for c in item:
            if c.tag == 'para':
                if not first:
                    self.flush()
                    self.emit('.IP')
                self.buf += self.inline_para(c)
                self.flush()
                for sub in c:
                    if sub.tag in ('itemizedlist', 'orderedlist'):
                        self.emit('.RS')
                        for n, it in enumerate(sub.findall('listitem'), 1):
                            self.emit('.IP %s 4' % ('%d.' % n if sub.tag == 'orderedlist'
                                                    else '\\(bu'))
                            self.block_in_item(it, skip)
                        self.emit('.RE')
                first = False

    def inline_para(self, para):
        """A para's inline content, leaving out nested lists."""
        s = esc(para.text or '') if para.text else ''
        for c in para:
            if c.tag not in ('itemizedlist', 'orderedlist', 'parameterlist', 'simplesect'):
                s += self.inline_child(c)
            if c.tail:
                s += esc(c.tail)
        return s

    def text(self):
        self.flush()
        return self.out


# ---- section 3 ----

def params_of(m):
    return [p.findtext('declname') for p in m.findall('param') if p.findtext('declname')]


def type_text(el):
    return norm_ws(''.join(el.itertext())).strip() if el is not None else ''


def prototype(m):
    """A function's declaration as a .BI line: names of parameters in italics."""
    ret = type_text(m.find('type'))
    name = m.findtext('name')
    parts = []
    params = m.findall('param')
    head = '%s%s%s(' % (ret, '' if ret.endswith('*') else ' ', name)
    if not params or (len(params) == 1 and type_text(params[0].find('type')) == 'void'
                      and not params[0].findtext('declname')):
        return '.BI "%s"' % esc(head + 'void);')
    bold = head
    for i, p in enumerate(params):
        t = type_text(p.find('type'))
        bold += t + ('' if t.endswith('*') else ' ')
        parts.append('"%s"' % esc(bold))
        parts.append(esc(p.findtext('declname') or ''))
        bold = ', ' if i + 1 < len(params) else ');'
    parts.append('"%s"' % esc(bold))
    return '.BI ' + ' '.join(parts)


def typedef_proto(m):
    """typedef int (*uffd_span_fn)(struct uffd *u, ...) as a .BI line."""
    ret = type_text(m.find('type')).replace('(*', '').strip()
    name = m.findtext('name')
    args = m.findtext('argsstring') or ''
    args = args[args.index('(') + 1:args.rindex(')')] if '(' in args else ''
    parts = []
    bold = 'typedef %s (*%s)(' % (ret, name)
    plist = [a.strip() for a in args.split(',')] if args.strip() else []
    for i, a in enumerate(plist):
        mt = re.match(r'^(.*?)(\w+)$', a)
        t, n = (mt.group(1), mt.group(2)) if mt else (a, '')
        bold += t
        parts.append('"%s"' % esc(bold))
        parts.append(esc(n))
        bold = ', ' if i + 1 < len(plist) else ');'
    if not plist:
        bold += 'void);'
    parts.append('"%s"' % esc(bold))
    return '.BI ' + ' '.join(parts)


def referenced_types(doc, m):
    """Structs, typedefs and enums a function's parameters name, and the structs those name."""
    structs, typedefs, enums = [], [], []

    def note_type(text):
        for name in re.findall(r'\b(uffd_\w+)\b', text):
            if name in doc.typedefs and name not in typedefs:
                typedefs.append(name)
                td = doc.typedefs[name]
                note_type(td.findtext('argsstring') or '')
            elif name in doc.enums and name not in enums:
                enums.append(name)
            elif name in doc.structs and name not in structs:
                cd = doc.structs[name]
                if cd.find('sectiondef') is None:
                    continue  # opaque
                structs.append(name)
                for member in cd.iter('memberdef'):
                    note_type(type_text(member.find('type')))

    for p in m.findall('param'):
        note_type(type_text(p.find('type')))
    note_type(type_text(m.find('type')))
    return structs, typedefs, enums


def desc_is_empty(el):
    return el is None or not norm_ws(''.join(el.itertext())).strip()


def return_parts(m):
    """The \\return section: (lead para element, list element or None)."""
    for ss in m.iter('simplesect'):
        if ss.get('kind') == 'return':
            return ss
    return None


def error_list(el):
    """The first itemized list under @el whose items name error codes, or None."""
    for lst in el.iter('itemizedlist'):
        items = [norm_ws(''.join(i.itertext())).strip() for i in lst.findall('listitem')]
        if items and sum(1 for t in items if re.match(r'-E[A-Z]', t)) * 2 >= len(items):
            return lst
    return None


def split_top(text, seps=(',', ';')):
    """Split at separators outside parentheses."""
    parts, depth, cur = [], 0, ''
    for ch in text:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth = max(0, depth - 1)
        if ch in seps and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    parts.append(cur)
    return parts


CODE = r'\\-(E[A-Z0-9]+)'


def inline_errors(roff):
    """Error codes named in a return sentence: [(code, explanation)]."""
    out, seen = [], set()
    for seg in split_top(roff):
        seg = seg.strip()
        if ':' in seg:
            seg = seg.rsplit(':', 1)[1].strip()
        seg = re.sub(r'^(or|and)\s+', '', seg)
        mt = re.match(r'^' + CODE + r'\b(.*)$', seg)
        if not mt:
            continue
        code, rest = mt.group(1), mt.group(2).strip()
        rest = re.split(r'\.(?:\s|$)', rest, maxsplit=1)[0].strip()
        if rest.startswith('(') and rest.endswith(')'):
            rest = rest[1:-1]
        rest = re.sub(r'^(if|for|when)\s+', '', rest).strip()
        if rest == 'NULL':  # "-EINVAL for NULL"
            rest = 'An argument is NULL'
        out.append((code, rest))
        seen.add(code)
    # Codes inside a parenthesis ("a negative errno (-EINVAL, or a callback's error)").
    for code in re.findall(CODE, roff):
        if code not in seen:
            out.append((code, ''))
            seen.add(code)
    return out


def sentence(text):
    text = text.strip()
    if not text:
        return text
    if not text.endswith('.'):
        text += '.'
    return text


def capital(text):
    """Upper-case the first letter of a sentence, unless it is formatted (a name)."""
    return text[:1].upper() + text[1:] if text[:1].islower() else text


def th(name, section, version):
    """The title line, then: no hyphenation (names and paths must stay whole), ragged right."""
    return '.TH %s %s "" "libuffd %s" "%s"\n.nh\n.ad l' % (name, section, version, MANUAL)


def see_also_line(items):
    """.BR a (3), ..."""
    lines = []
    for i, it in enumerate(items):
        name, sec = re.match(r'^(.*)\((\w+)\)$', it).groups()
        lines.append('.BR %s (%s)%s' % (esc(name), sec, ',' if i + 1 < len(items) else ''))
    return lines


def function_page(doc, name, version):
    m, group = doc.funcs[name]
    doc.guide_refs = []
    params = params_of(m)
    out = [th(name, '3', version), '.SH NAME']
    brief = norm_ws(''.join(m.find('briefdescription').itertext())).strip()
    brief = re.sub(r'^%s\s*-\s*' % re.escape(name), '', brief).rstrip('.')
    out.append('%s \\- %s' % (esc(name), esc(brief)))

    structs, typedefs, enums = referenced_types(doc, m)
    out += ['.SH SYNOPSIS', '.nf', '.B #include <uffd.h>', '.PP', prototype(m)]
    for td in typedefs:
        out += ['.PP', typedef_proto(doc.typedefs[td])]
    out.append('.fi')

    ret = return_parts(m)
    detail = m.find('detaileddescription')
    w = Writer(doc, params)
    skip = set(detail.iter('simplesect')) if detail is not None else set()
    skip = {s for s in skip if s.get('kind') in ('return', 'see')}
    if detail is not None:
        w.block(detail, skip)
    plist = [pl for pl in detail.iter('parameterlist') if pl.get('kind') == 'param'] \
        if detail is not None else []
    body = w.text()
    out.append('.SH DESCRIPTION')
    out += body
    items = []
    for pl in plist:
        for item in pl.findall('parameteritem'):
            pname = ', '.join(''.join(n.itertext()) for n in item.iter('parametername'))
            pw = Writer(doc, params)
            pw.buf = pw.inline_para(item.find('parameterdescription').find('para')) \
                if item.find('parameterdescription').find('para') is not None else ''
            items.append((pname, ' '.join(pw.text())))
    if items:
        out += ['.PP', 'The arguments:']
        for pname, text in items:
            out += ['.TP', '.I %s' % esc(pname), guard(text)]

    # Types the prototype uses, with their documentation.
    for sname in structs:
        out += struct_section(doc, sname, params)
    for ename in enums:
        out += enum_section(doc, ename, params)

    # RETURN VALUE and ERRORS, from \return (or the group's errno list: "see the group").
    errors = []   # (tag roff, text roff)
    group_list = error_list(group.find('detaileddescription')) if group is not None else None
    used_group_list = False
    if ret is not None:
        lead_w = Writer(doc, params)
        paras = ret.findall('para')
        lead = ' '.join(lead_w.inline_para(p) for p in paras)
        lead = norm_ws(lead).strip()
        lst = error_list(ret)
        if lst is not None:
            for item in lst.findall('listitem'):
                iw = Writer(doc, params)
                text = norm_ws(' '.join(iw.inline_para(p) for p in item.findall('para'))).strip()
                mt = re.match(r'^((?:\\-E[A-Z0-9]+)(?:\s*,\s*\\-E[A-Z0-9]+)*)\s*:\s*(.*)$', text)
                if mt:
                    errors.append((mt.group(1), mt.group(2)))
                else:
                    errors.append(('', text))
            lead = re.sub(r':\s*$', '.', lead)
        else:
            errors = [('\\-' + c, t) for c, t in inline_errors(lead)]
        if 'see the group' in lead and group_list is not None:
            used_group_list = True
            for item in group_list.findall('listitem'):
                iw = Writer(doc, params)
                text = norm_ws(' '.join(iw.inline_para(p) for p in item.findall('para'))).strip()
                mt = re.match(r'^((?:\\-E[A-Z0-9]+)(?:\s*,\s*\\-E[A-Z0-9]+)*)\s*:\s*(.*)$', text)
                if mt:
                    errors.append((mt.group(1), mt.group(2)))
            lead = lead.replace('see the group', 'see ERRORS')
        lead = lead.replace('see the group', 'see DESCRIPTION')
        out += ['.SH RETURN VALUE', guard(capital(sentence(lead)))]
    else:
        rtype = type_text(m.find('type'))
        out += ['.SH RETURN VALUE',
                'None.' if rtype == 'void' else 'See DESCRIPTION.']

    # The group's own text applies to every function in it.
    if group is not None and not desc_is_empty(group.find('detaileddescription')):
        gw = Writer(doc, params)
        gdesc = group.find('detaileddescription')
        skip_paras = set()
        if used_group_list:
            for p in gdesc.iter('para'):
                if group_list in list(p):
                    skip_paras.add(p)
        gw.block(gdesc, skip_paras)
        gtext = gw.text()
        if gtext:
            # Inserted at the end of DESCRIPTION, before RETURN VALUE.
            at = out.index('.SH RETURN VALUE')
            title = group.findtext('title')
            out[at:at] = ['.SS %s' % esc(title)] + gtext

    out.append('.SH ERRORS')
    if errors:
        for tag, text in errors:
            text = text.replace('see the group', 'see DESCRIPTION')
            if not text and tag:
                first = re.findall(r'E[A-Z0-9]+', tag)[0]
                text = ERRNO_TEXT.get(first, '')
            if tag:
                out += ['.TP', '.B %s' % tag, guard(capital(sentence(text)))]
            else:
                out += ['.TP', 'Other', guard(capital(sentence(text)))]
    else:
        out.append('None: this function does not fail.')

    # SEE ALSO: functions the page refers to, the rest of its group, the overview, the kernel.
    see = []
    for ref in m.iter('ref'):
        t = ''.join(ref.itertext())
        fn = t[:-2] if t.endswith('()') else t
        if fn in doc.funcs and fn != name and fn + '(3)' not in see:
            see.append(fn + '(3)')
    if group is not None:
        for gm in group.iter('memberdef'):
            fn = gm.findtext('name')
            if gm.get('kind') == 'function' and fn != name and fn + '(3)' not in see:
                see.append(fn + '(3)')
    see += ['libuffd(7)'] + KERNEL_PAGES
    out.append('.SH SEE ALSO')
    out += see_also_line(see)
    out += guide_see_also(doc)
    return '\n'.join(out) + '\n'


def struct_section(doc, sname, params):
    cd = doc.structs[sname]
    out = ['.SS struct %s' % esc(sname)]
    w = Writer(doc, params)
    w.block(cd.find('briefdescription'))
    if not desc_is_empty(cd.find('detaileddescription')):
        w.para_break()
        w.block(cd.find('detaileddescription'))
    out += w.text()
    prefixes = set()
    for member in cd.iter('memberdef'):
        if member.get('kind') != 'variable':
            continue
        mw = Writer(doc, params)
        mw.block(member.find('briefdescription'))
        if not desc_is_empty(member.find('detaileddescription')):
            mw.para_break()
            mw.block(member.find('detaileddescription'))
        decl = '%s %s%s' % (type_text(member.find('type')), member.findtext('name'),
                            member.findtext('argsstring') or '')
        out += ['.TP', '.B %s' % esc(decl.replace('* ', '*'))] + \
            [line for line in mw.text() if line != '.PP']
        prefixes.update(re.findall(r'(UFFD_[A-Z]+_)\*', ''.join(member.itertext())))
    # Flags the library itself defines for a field ("`UFFD_OPEN_*` flags"), with their text.
    for prefix in sorted(prefixes):
        defs = [d for d in doc.defines if d.startswith(prefix)]
        for d in defs:
            dm = doc.defines[d]
            dw = Writer(doc, params)
            dw.block(dm.find('briefdescription'))
            if not desc_is_empty(dm.find('detaileddescription')):
                dw.block(dm.find('detaileddescription'))
            out += ['.TP', '.B %s' % esc(d)] + [line for line in dw.text() if line != '.PP']
    return out


def enum_section(doc, ename, params):
    em = doc.enums[ename]
    out = ['.SS enum %s' % esc(ename)]
    w = Writer(doc, params)
    w.block(em.find('briefdescription'))
    out += w.text()
    for v in em.findall('enumvalue'):
        vw = Writer(doc, params)
        vw.block(v.find('briefdescription'))
        init = norm_ws(v.findtext('initializer') or '').lstrip('= ').strip()
        out += ['.TP', '.B %s%s' % (esc(v.findtext('name')), (' = ' + esc(init)) if init else '')]
        out += [line for line in vw.text() if line != '.PP']
    return out


def overview_page(doc, version, tools):
    """libuffd(7): the header's own introduction, then each group and its functions."""
    doc.guide_refs = []
    out = [th('libuffd', '7', version), '.SH NAME',
           'libuffd \\- a C library for Linux userfaultfd monitors', '.SH SYNOPSIS', '.nf',
           '.B #include <uffd.h>', '.PP',
           '.B cc ... $(pkg-config \\-\\-cflags \\-\\-libs libuffd)', '.fi',
           '.SH DESCRIPTION']
    w = Writer(doc)
    w.block(doc.file.find('detaileddescription'))  # the brief is the NAME line
    out += w.text()
    for _, g in doc.groups:
        out.append('.SS %s' % esc(g.findtext('title')))
        gw = Writer(doc)
        gw.block(g.find('briefdescription'))
        out += gw.text()
        for gm in g.iter('memberdef'):
            if gm.get('kind') != 'function':
                continue
            fn = gm.findtext('name')
            brief = norm_ws(''.join(gm.find('briefdescription').itertext())).strip()
            brief = re.sub(r'^%s\s*-\s*' % re.escape(fn), '', brief)
            out += ['.TP', '.BR %s (3)' % esc(fn), guard(esc(sentence(brief)))]
    out.append('.SH SEE ALSO')
    see = sorted(t + '(1)' for t in tools) + KERNEL_PAGES + ['proc(5)']
    out += see_also_line(see)
    out += guide_see_also(doc)
    return '\n'.join(out) + '\n'


# ---- section 1 ----

def tool_name_line(name, source, description):
    """The one-line summary: the tool's source file says it on its second line
    ("/* tool: what it does. */"), else the first sentence of --help."""
    if source and os.path.exists(source):
        with open(source, encoding='utf-8') as f:
            for line in f.read().split('\n')[:4]:
                mt = re.match(r'^/\*\s*%s:\s*(.*?)\s*\*/\s*$' % re.escape(name), line)
                if mt:
                    return mt.group(1).rstrip('.')
    first = re.split(r'(?<=\.)\s', description, maxsplit=1)[0]
    return first.rstrip('.')


def esc_opt(text):
    """An option name: every hyphen a minus sign, so it is typed as shown and never broken."""
    return text.replace('\\', '\\e').replace('-', '\\-')


def usage_synopsis(usage):
    """usage: tool [--opt N] [--flag] FILE  ->  roff, options bold, values italic."""
    words = usage.split()
    out = []
    for tok in re.findall(r'\[[^\]]*\]|\S+', ' '.join(words[1:])):
        opt = tok.startswith('[')
        inner = tok[1:-1] if opt else tok
        parts = inner.split()
        r = []
        for p in parts:
            if p.startswith('-'):
                r.append('\\fB%s\\fR' % esc_opt(p))
            elif p.isupper():
                r.append('\\fI%s\\fR' % esc(p))
            else:
                r.append(esc(p))
        text = '\\ '.join(r)  # an option and its value never part at the end of a line
        out.append('[%s]' % text if opt else text)
    return '\\fB%s\\fR %s' % (esc(words[0]), ' '.join(out))


def tool_page(name, binary, source, version, funcs, tools):
    try:
        res = subprocess.run([binary, '--help'], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        die('cannot run %s --help: %s' % (binary, e))
    if res.returncode != 0 or not res.stdout.strip():
        die('%s --help failed (exit %d): %s' % (binary, res.returncode, res.stderr.strip()))
    text = res.stdout.rstrip('\n')
    blocks = re.split(r'\n\s*\n', text)
    usage = blocks[0].strip()
    if not usage.startswith('usage: '):
        die('%s --help does not start with "usage: "' % binary)
    usage = norm_ws(usage[len('usage: '):])
    description, options, exit_status, notes = [], [], '', []
    for b in blocks[1:]:
        if re.match(r'^\s+-', b):
            options.append(b)
        elif b.startswith('Exit status:'):
            exit_status = norm_ws(b[len('Exit status:'):]).strip()
        elif options:
            notes.append(b)
        else:
            description.append(b)
    desc_text = norm_ws(' '.join(description))
    out = [th(name, '1', version), '.SH NAME',
           '%s \\- %s' % (esc(name), esc(tool_name_line(name, source, desc_text))),
           '.SH SYNOPSIS', usage_synopsis(usage), '.SH DESCRIPTION']
    for i, b in enumerate(description + notes):
        if i:
            out.append('.PP')
        out.append(guard(esc(norm_ws(b).strip())))
    if options:
        out.append('.SH OPTIONS')
        for b in options:
            entries = []
            for line in b.split('\n'):
                # "  -x, --long META  what it does": option names, an upper-case value name,
                # then the description (on this line or the next ones, indented).
                mt = re.match(r'^\s{1,8}(-[\w-]+(?:,\s*-[\w-]+)*)(?:\s+([A-Z][A-Z_]*))?'
                              r'(?:\s+(.*))?$', line)
                if mt:
                    entries.append([mt.group(1), mt.group(2) or '', mt.group(3) or ''])
                elif entries:
                    entries[-1][2] += ' ' + line.strip()
            for names, meta, desc in entries:
                spec = ', '.join('\\fB%s\\fR' % esc_opt(n.strip()) for n in names.split(','))
                if meta:
                    spec += ' \\fI%s\\fR' % esc(meta)
                out += ['.TP', spec, guard(esc(capital(sentence(norm_ws(desc)))))]
    if exit_status:
        out += ['.SH EXIT STATUS', guard(esc(capital(exit_status)))]
    see = []
    for fn in re.findall(r'\b(uffd_\w+)\(\)', text):
        if fn in funcs and fn + '(3)' not in see:
            see.append(fn + '(3)')
    see += ['libuffd(7)'] + [t + '(1)' for t in sorted(tools) if t != name] + ['userfaultfd(2)']
    out.append('.SH SEE ALSO')
    out += see_also_line(see)
    return '\n'.join(out) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--xml', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--version', required=True)
    ap.add_argument('--tool', action='append', default=[],
                    help='NAME=BINARY[=SOURCE]: a tool whose --help becomes NAME.1')
    args = ap.parse_args()

    doc = Doc(args.xml)
    tools = {}
    for spec in args.tool:
        parts = spec.split('=')
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            die('bad --tool %r: want NAME=BINARY[=SOURCE]' % spec)
        tools[parts[0]] = (parts[1], parts[2] if len(parts) == 3 else '')

    for sec in ('man1', 'man3', 'man7'):
        shutil.rmtree(os.path.join(args.out, sec), ignore_errors=True)
        os.makedirs(os.path.join(args.out, sec))

    def write(sec, name, text):
        with open(os.path.join(args.out, 'man' + sec, '%s.%s' % (name, sec)), 'w',
                  encoding='utf-8') as f:
            f.write(text)

    for name in sorted(doc.funcs):
        write('3', name, function_page(doc, name, args.version))
    write('7', 'libuffd', overview_page(doc, args.version, tools))
    for name, (binary, source) in sorted(tools.items()):
        write('1', name, tool_page(name, binary, source, args.version, doc.funcs, tools))
    print('gen-man.py: %d section 3 pages, libuffd.7, %d section 1 pages in %s'
          % (len(doc.funcs), len(tools), args.out))


if __name__ == '__main__':
    main()
