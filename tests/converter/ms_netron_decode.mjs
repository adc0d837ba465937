// Decode a .ms file with Netron's own reader and print a JSON summary.
// Usage: node ms_netron_decode.mjs <dir with flatbuffers/mslite-schema/mslite .mjs> <model.ms>...
// Prints one JSON object per model (a JSON list when several models are given).
// Used by tests/converter/test_ms_netron.py (netron_decode).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [libDir, ...modelPaths] = process.argv.slice(2);
const flatbuffers = await import(pathToFileURL(join(libDir, 'flatbuffers.mjs')).href);
const { mindspore } = await import(pathToFileURL(join(libDir, 'mslite-schema.mjs')).href);
const mslite = await import(pathToFileURL(join(libDir, 'mslite.mjs')).href);

async function decode(modelPath) {
    const data = new Uint8Array(readFileSync(modelPath));
    const reader = flatbuffers.BinaryReader.open(data);
    if (!reader) {
        throw new Error('not a FlatBuffers file');
    }
    const model = mindspore.schema.MetaGraph.create(reader);

    // Open the file the way the Netron app does (mslite.js ModelFactory): this builds every
    // graph, node and tensor type and throws on what Netron cannot show (e.g. unknown dtypes).
    const context = {
        identifier: modelPath,
        value: reader,
        require: async () => ({ mindspore }),
        metadata: async () => ({ type: (name) => ({ name }), attribute: () => null }),
    };
    const opened = await new mslite.ModelFactory().open(context);
    const netronGraphs = opened.modules.map((g) => ({
        name: g.name,
        nodes: g.nodes.map((n) => n.type.name),
        inputs: g.inputs.map((a) => a.value[0].type.toString()),
        outputs: g.outputs.map((a) => a.value[0].type.toString()),
    }));

    const plain = (value) => {
        if (typeof value === 'bigint') {
            return Number(value);
        }
        if (ArrayBuffer.isView(value)) {
            return Array.from(value, plain);
        }
        if (Array.isArray(value)) {
            return value.map(plain);
        }
        if (value && typeof value === 'object') {
            return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
        }
        return value;
    };

    const nodes = model.nodes.map((node) => {
        const value = node.primitive ? node.primitive.value : null;
        const type = value ? value.constructor.name : null;
        const attributes = {};
        if (value) {
            for (const [key, v] of Object.entries(value)) {
                if (type === 'Custom' && key === 'attr') {
                    attributes.attr = v.map((a) => ({ name: a.name, size: a.data.length }));
                } else {
                    attributes[key] = plain(v);
                }
            }
        }
        return {
            name: node.name,
            type,
            attributes,
            inputs: Array.from(node.inputIndex),
            outputs: Array.from(node.outputIndex),
        };
    });
    const tensors = model.allTensors.map((t) => ({
        name: t.name,
        nodeType: t.nodeType,
        dataType: t.dataType,
        dims: Array.from(t.dims),
        format: t.format,
        dataLength: t.data ? t.data.length : 0,
        quantParams: t.quantParams.map((q) => ({ scale: q.scale, zeroPoint: q.zeroPoint, numBits: q.numBits })),
        externalData: t.externalData.map((e) => ({
            location: e.location, offset: Number(e.offset), length: Number(e.length), checkSum: e.checkSum,
        })),
    }));
    const subgraphs = model.subGraph.map((s) => ({
        name: s.name,
        inputIndices: Array.from(s.inputIndices),
        outputIndices: Array.from(s.outputIndices),
        nodeIndices: Array.from(s.nodeIndices),
        tensorIndices: Array.from(s.tensorIndices),
    }));
    return {
        identifier: reader.identifier,
        name: model.name,
        version: model.version,
        fmkType: model.fmkType,
        inputIndex: Array.from(model.inputIndex),
        outputIndex: Array.from(model.outputIndex),
        format: opened.format,
        netronGraphs,
        nodeCount: nodes.length,
        nodes,
        tensors,
        subgraphs,
    };
}

const results = [];
for (const path of modelPaths) {
    results.push(await decode(path));
}
process.stdout.write(JSON.stringify(results.length === 1 ? results[0] : results));
