// Rebuilds envd's .proto files from the FileDescriptorProtos that protobuf-es embedded (base64) in
// the installed e2b SDK's generated code, so the vendored spec is exactly what the SDK speaks.
// Run: node_modules/.bin/node src/e2b/proto/reconstruct.ts           (writes the .proto files)
//      node_modules/.bin/node src/e2b/proto/reconstruct.ts --check   (rebuilds them with buf and
//      compares each descriptor, normalised as protobuf-es embeds it, with the SDK's)
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { equals, fromBinary, isFieldSet } from '@bufbuild/protobuf';
import { base64Decode } from '@bufbuild/protobuf/wire';
import { embedFileDesc } from '@bufbuild/protobuf/codegenv2';
import {
  FieldDescriptorProtoSchema, FileDescriptorProtoSchema, FileDescriptorSetSchema, FieldDescriptorProto_Label as Label, FieldDescriptorProto_Type as Type,
  type DescriptorProto, type EnumDescriptorProto, type FieldDescriptorProto, type FileDescriptorProto,
} from '@bufbuild/protobuf/wkt';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '../../..');
const SDK = join(root, 'node_modules/e2b/dist/index.mjs');

/** The embedded descriptors: fileDesc("<base64>", [imports]). */
function embedded(): { b64: string; proto: FileDescriptorProto; imports: string[] }[] {
  const src = readFileSync(SDK, 'utf8');
  return [...src.matchAll(/fileDesc\("([A-Za-z0-9+/=]+)"(?:, \[([^\]]*)\])?\)/g)].map((m) => {
    const proto = fromBinary(FileDescriptorProtoSchema, base64Decode(m[1]!));
    // The embedding drops the dependency list; the SDK passes the imports instead.
    const imports = (m[2] ?? '').split(',').map((s) => s.trim()).filter(Boolean)
      .map((v) => v === 'file_google_protobuf_timestamp' ? 'google/protobuf/timestamp.proto' : `?${v}`);
    return { b64: m[1]!, proto, imports };
  });
}

const SCALAR: Partial<Record<Type, string>> = {
  [Type.DOUBLE]: 'double', [Type.FLOAT]: 'float', [Type.INT64]: 'int64', [Type.UINT64]: 'uint64', [Type.INT32]: 'int32',
  [Type.FIXED64]: 'fixed64', [Type.FIXED32]: 'fixed32', [Type.BOOL]: 'bool', [Type.STRING]: 'string', [Type.BYTES]: 'bytes',
  [Type.UINT32]: 'uint32', [Type.SFIXED32]: 'sfixed32', [Type.SFIXED64]: 'sfixed64', [Type.SINT32]: 'sint32', [Type.SINT64]: 'sint64',
};

/** A type reference relative to the file's package (".filesystem.EntryInfo" -> "EntryInfo"). */
function typeName(f: FieldDescriptorProto, pkg: string): string {
  if (f.type !== Type.MESSAGE && f.type !== Type.ENUM) return SCALAR[f.type]!;
  const n = f.typeName;
  return n.startsWith(`.${pkg}.`) ? n.slice(pkg.length + 2) : n.slice(1);
}

function renderEnum(e: EnumDescriptorProto, ind: string): string[] {
  return [`${ind}enum ${e.name} {`, ...e.value.map((v) => `${ind}  ${v.name} = ${v.number};`), `${ind}}`];
}

function renderMessage(m: DescriptorProto, pkg: string, ind: string): string[] {
  const out = [`${ind}message ${m.name} {`];
  const maps = new Map(m.nestedType.filter((n) => n.options?.mapEntry).map((n) => [n.name, n]));
  const field = (f: FieldDescriptorProto, i: string) => {
    const entry = f.type === Type.MESSAGE ? maps.get(f.typeName.split('.').pop()!) : undefined;
    if (entry && f.label === Label.REPEATED) {
      const [k, v] = entry.field;
      return `${i}map<${typeName(k!, pkg)}, ${typeName(v!, pkg)}> ${f.name} = ${f.number};`;
    }
    const label = f.proto3Optional ? 'optional ' : f.label === Label.REPEATED ? 'repeated ' : '';
    return `${i}${label}${typeName(f, pkg)} ${f.name} = ${f.number};`;
  };
  for (const n of m.nestedType) if (!n.options?.mapEntry) out.push(...renderMessage(n, pkg, `${ind}  `));
  for (const e of m.enumType) out.push(...renderEnum(e, `${ind}  `));
  // oneof_index is proto2-optional: 0 is a real index only when set.
  const realOneof = (f: FieldDescriptorProto) => isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && !f.proto3Optional;
  for (let i = 0; i < m.field.length;) {
    const f = m.field[i]!;
    if (!realOneof(f)) { out.push(field(f, `${ind}  `)); i++; continue; }
    out.push(`${ind}  oneof ${m.oneofDecl[f.oneofIndex!]!.name} {`);
    while (i < m.field.length && realOneof(m.field[i]!) && m.field[i]!.oneofIndex === f.oneofIndex) out.push(field(m.field[i++]!, `${ind}    `));
    out.push(`${ind}  }`);
  }
  out.push(`${ind}}`);
  return out;
}

const q = (s: string) => JSON.stringify(s);

export function renderFile(f: FileDescriptorProto, imports: string[]): string {
  const o = f.options;
  const lines = [
    '// Reconstructed from the FileDescriptorProto embedded in e2b@2.51.0 (node_modules/e2b/dist/index.mjs)',
    '// by src/e2b/proto/reconstruct.ts. Origin: e2b-dev/E2B spec/envd (MIT). See README.md here.',
    `syntax = ${q(f.syntax || 'proto2')};`, '', `package ${f.package};`, '',
    ...imports.map((i) => `import ${q(i)};`), ...(imports.length ? [''] : []),
  ];
  if (o) {
    const opt = (name: string, v: unknown) => { if (v !== undefined && v !== '' ) lines.push(`option ${name} = ${typeof v === 'string' ? q(v) : String(v)};`); };
    opt('go_package', o.goPackage); opt('java_package', o.javaPackage); opt('java_outer_classname', o.javaOuterClassname);
    if (o.javaMultipleFiles) opt('java_multiple_files', true);
    opt('objc_class_prefix', o.objcClassPrefix); opt('csharp_namespace', o.csharpNamespace); opt('swift_prefix', o.swiftPrefix);
    opt('php_namespace', o.phpNamespace); opt('php_metadata_namespace', o.phpMetadataNamespace); opt('ruby_package', o.rubyPackage);
    lines.push('');
  }
  for (const m of f.messageType) lines.push(...renderMessage(m, f.package, ''), '');
  for (const e of f.enumType) lines.push(...renderEnum(e, ''), '');
  for (const s of f.service) {
    lines.push(`service ${s.name} {`);
    for (const m of s.method) {
      const t = (n: string) => (n.startsWith(`.${f.package}.`) ? n.slice(f.package.length + 2) : n.slice(1));
      lines.push(`  rpc ${m.name}(${m.clientStreaming ? 'stream ' : ''}${t(m.inputType)}) returns (${m.serverStreaming ? 'stream ' : ''}${t(m.outputType)});`);
    }
    lines.push('}', '');
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

function main(): void {
  const files = embedded();
  if (!process.argv.includes('--check')) {
    for (const { proto, imports } of files) {
      mkdirSync(dirname(join(here, proto.name)), { recursive: true });
      writeFileSync(join(here, proto.name), renderFile(proto, imports));
      console.log(`wrote src/e2b/proto/${proto.name}`);
    }
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'e2b-proto-'));
  try {
    const out = join(dir, 'set.binpb');
    execFileSync(join(root, 'node_modules/.bin/buf'), ['build', here, '--exclude-source-info', '-o', out], { stdio: 'inherit' });
    const built = fromBinary(FileDescriptorSetSchema, readFileSync(out));
    let bad = 0;
    for (const { b64, proto } of files) {
      const mine = built.file.find((x) => x.name === proto.name);
      // Compared as messages: the bytes may order fields differently than the SDK's generator did.
      const same = mine !== undefined && equals(FileDescriptorProtoSchema, fromBinary(FileDescriptorProtoSchema, base64Decode(embedFileDesc(mine).base64())), fromBinary(FileDescriptorProtoSchema, base64Decode(b64)));
      console.log(`${proto.name}: ${same ? 'identical to the SDK\'s embedded descriptor' : 'DIFFERS'}`);
      if (!same) bad++;
    }
    process.exitCode = bad ? 1 : 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
